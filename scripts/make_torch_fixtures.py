"""Write the PyTorch reference fixtures of ``tests/test_from_torch.py`` (needs PyTorch).

Run this ONLY in a separate virtual environment with PyTorch, never in CI (the tests read the
files it writes and need neither PyTorch nor this script)::

    python3 -m venv /work/torchenv
    /work/torchenv/bin/pip install torch==2.13.0 safetensors numpy   # not torchvision
    /work/torchenv/bin/pip install --no-deps robustbench               # its code, no deps
    /work/torchenv/bin/python scripts/make_torch_fixtures.py [--out tests/fixtures/torch]

DeepMind's architectures (``DMWideResNet``, ``DMPreActResNet``, ReLU and Swish) come from
RobustBench's own file ``robustbench/model_zoo/architectures/dm_wide_resnet.py``, loaded by
path (it imports only torch; ``import robustbench`` would pull in its many dependencies).
``DMPreActResNet`` has fixed widths 64-512 (11M parameters); its fixture is built by the same
RobustBench code with ``nn.Conv2d``, ``nn.BatchNorm2d`` and ``nn.Linear`` narrowed 16-fold
while the constructor runs (:func:`narrowed`), so every forward line is RobustBench's.

The script defines the other reference architectures itself, following the PyTorch sources
module for module (names, paddings, strides, bias flags, BatchNorm ``eps=1e-5``):

* ``WideResNet`` -- Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016), as in
  RobustBench's ``robustbench/model_zoo/architectures/wide_resnet.py``;
* ``PreActResNet`` -- He et al., "Identity Mappings in Deep Residual Networks" (ECCV 2016), as
  in RobustBench's ``robustbench/model_zoo/architectures/resnet.py``;
* ``ResNet`` -- He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), as in
  torchvision's ``torchvision/models/resnet.py`` (v1.5 bottleneck, 7x7 stem, 3x3/2 max pool).

It writes, for each fixture ``<name>``:

* ``<name>.safetensors``: the model's state dict (float32, with ``num_batches_tracked``);
* ``<name>_io.npz``: ``images`` (NCHW, uniform in [0, 1], float32), ``logits`` (the float32
  model's eval-mode logits), ``logits64`` (the same weights in float64) and ``grad64`` (the
  float64 input gradient of ``logit_1 - logit_0``, NCHW), plus the architecture and
  configuration as JSON in ``spec``;

and ``wrn_10_1_dataparallel.pt`` (a ``{"state_dict": {"module." + key: tensor}}`` checkpoint,
as ``torch.save`` of a DataParallel model gives, for the ``.pt`` paths) with
``wrn_10_1_dataparallel_io.npz``; and ``torch_keys.json``: the state-dict key names and shapes
and the parameter counts of the FULL-SIZE architectures (WRN-28-10, WRN-34-10, WRN-70-16,
PreActResNet-18, ResNet-18, ResNet-50, ResNeXt-50 32x4d, Wide ResNet-50-2), built on the meta
device (no memory).

Size choice. The committed fixtures must stay well under 10 MB, and full-width models do not
fit: ResNet-18 has 11.7M parameters (47 MB in float32), PreActResNet-18 11.2M, ResNet-50 25.6M
(100 MB). torchvision's own knob ``width_per_group`` cannot shrink them: it only sets the inner
width of a bottleneck (and BasicBlock rejects anything but 64), while the stem, the block
outputs (64 x 4 ... 512 x 4 channels), the downsample convolutions and ``fc`` keep their full
size. So the numerical fixtures use an explicit ``widths`` argument (the planes of the four
stages; the stem has ``widths[0]`` channels), ``(8, 16, 32, 64)`` instead of ``(64, 128, 256,
512)``, added to the reference definitions here and supported by the JAX models; with the
default ``widths`` both are exactly the published architectures (fixtures use ``(8, 16, 32,
64)`` or ``(4, 8, 16, 32)``; about 5 MB in all). The full-size definitions
are checked through ``torch_keys.json`` (every key name and shape, and the parameter count).
Wide ResNets are small at depth 10-16 and widen factor 1-2 and need no such change.

Every BatchNorm's ``weight``, ``bias``, ``running_mean`` and ``running_var`` is randomised, so
the evaluation-mode normalisation is really exercised; the torchvision-style images have odd,
non-square sizes (e.g. 37x45), where PyTorch's padding arithmetic differs from ``"SAME"``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

# ----------------------------------------------------------------------------- RobustBench WRN


class WRNBlock(nn.Module):
    """RobustBench's WRN ``BasicBlock`` (pre-activation; shortcut from the activation when the
    width changes)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (
            None
            if self.equalInOut
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x):
        if self.equalInOut:
            out = self.relu1(self.bn1(x))
            out = self.relu2(self.bn2(self.conv1(out)))
            return x + self.conv2(out)
        x = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(x)))
        return self.convShortcut(x) + self.conv2(out)


class NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WRNBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                for i in range(n)
            ]
        )

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth=28, num_classes=10, widen_factor=10, sub_block1=False, bias_last=True):
        super().__init__()
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        assert (depth - 4) % 6 == 0
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        if sub_block1:
            self.sub_block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes, bias=bias_last)
        self.nChannels = ch[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.data.zero_()

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.view(-1, self.nChannels))


# ----------------------------------------------------------------------------- RobustBench PreAct


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, out_shortcut=False):
        super().__init__()
        self.out_shortcut = out_shortcut
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            )

    def forward(self, x):
        out = F.relu(self.bn1(x))
        if hasattr(self, "shortcut"):
            shortcut = self.shortcut(out if self.out_shortcut else x)
        else:
            shortcut = x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(
        self,
        num_blocks=(2, 2, 2, 2),
        num_classes=10,
        bn_before_fc=False,
        out_shortcut=False,
        widths=(64, 128, 256, 512),
    ):
        super().__init__()
        self.bn_before_fc = bn_before_fc
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        for i, (planes, n) in enumerate(zip(widths, num_blocks, strict=True)):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            blocks = []
            for s in strides:
                blocks.append(PreActBlock(self.in_planes, planes, s, out_shortcut))
                self.in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        if bn_before_fc:
            self.bn = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.bn_before_fc:
            out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


# ----------------------------------------------------------------------------- torchvision ResNet


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(
        self,
        block,
        layers,
        num_classes=1000,
        groups=1,
        width_per_group=64,
        widths=(64, 128, 256, 512),
    ):
        super().__init__()
        self.inplanes = widths[0]
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(
                block(self.inplanes, planes, groups=self.groups, base_width=self.base_width)
            )
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# ----------------------------------------------------------------------------- DeepMind


def robustbench_dm():
    """RobustBench's ``dm_wide_resnet.py`` module, loaded by file path (no ``robustbench``
    package import: that would need timm, pandas, ...)."""
    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps robustbench (its architecture code is read)")
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "model_zoo" / "architectures" / "dm_wide_resnet.py"
    mod_spec = importlib.util.spec_from_file_location("rb_dm_wide_resnet", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def narrowed(factor: int):
    """While it runs, ``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear`` build layers with
    ``factor`` times fewer hidden channels (image channels and logits unchanged), so a
    fixed-width PyTorch definition builds a small network with the same structure."""
    conv, bn, linear = nn.Conv2d, nn.BatchNorm2d, nn.Linear

    def narrow(c):
        return c if c == 3 else max(1, c // factor)

    class Conv(conv):
        def __init__(self, cin, cout, *args, **kwargs):
            super().__init__(narrow(cin), narrow(cout), *args, **kwargs)

    class BN(bn):
        def __init__(self, c, *args, **kwargs):
            super().__init__(narrow(c), *args, **kwargs)

    class Lin(linear):
        def __init__(self, cin, cout, *args, **kwargs):
            super().__init__(narrow(cin), cout, *args, **kwargs)

    nn.Conv2d, nn.BatchNorm2d, nn.Linear = Conv, BN, Lin
    try:
        yield
    finally:
        nn.Conv2d, nn.BatchNorm2d, nn.Linear = conv, bn, linear


def build_dm(architecture: str, num_classes: int, **config) -> nn.Module:
    """RobustBench's ``DMWideResNet`` / ``DMPreActResNet`` for the JAX configuration."""
    dm = robustbench_dm()
    act = {"relu": nn.ReLU, "swish": dm.Swish}[config.get("activation", "relu")]
    kw = dict(num_classes=num_classes, activation_fn=act)
    if "mean" in config:
        kw.update(mean=tuple(config["mean"]), std=tuple(config["std"]))
    if architecture == "dm_wide_resnet":
        return dm.DMWideResNet(depth=config["depth"], width=config["width"], **kw)
    widths = tuple(config.get("widths", (64, 128, 256, 512)))
    factor = 64 // widths[0]
    assert widths == tuple(w // factor for w in (64, 128, 256, 512)), widths
    with narrowed(factor):
        return dm.DMPreActResNet(depth=config.get("depth", 18), **kw)


# ----------------------------------------------------------------------------- fixtures


def build(architecture: str, num_classes: int, **config) -> nn.Module:
    """The reference model of ``geomrobust.models.from_torch(architecture)``."""
    if architecture.startswith("dm_"):
        return build_dm(architecture, num_classes, **config)
    if architecture == "wide_resnet":
        return WideResNet(num_classes=num_classes, **config)
    if architecture == "preact_resnet18":
        return PreActResNet((2, 2, 2, 2), num_classes, **config)
    if architecture == "resnet18":
        return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, **config)
    if architecture == "resnet50":
        return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, **config)
    raise ValueError(f"unknown architecture {architecture!r}")


SMALL = (8, 16, 32, 64)
TINY = (4, 8, 16, 32)

# name: (architecture, config, num_classes, image (H, W))
FIXTURES = {
    # widen 1: block1's first block has equal in/out widths (no convShortcut)
    "wrn_16_1": ("wide_resnet", dict(depth=16, widen_factor=1), 10, (32, 32)),
    # widen 2: convShortcut in block1; the unused sub_block1; fc without bias
    "wrn_10_2_sub": (
        "wide_resnet",
        dict(depth=10, widen_factor=2, sub_block1=True, bias_last=False),
        10,
        (32, 32),
    ),
    "preact18_w8": ("preact_resnet18", dict(widths=SMALL), 10, (32, 32)),
    "preact18_w4_bn_outsc": (
        "preact_resnet18",
        dict(widths=TINY, bn_before_fc=True, out_shortcut=True),
        10,
        (32, 32),
    ),
    "resnet18_w8": ("resnet18", dict(widths=SMALL), 10, (37, 45)),
    "resnet50_w4": ("resnet50", dict(widths=TINY), 10, (40, 33)),
    # grouped 3x3 convolutions (ResNeXt-style): width = int(planes * 32 / 64) * 2 = planes
    "resnet50_w4_g2": ("resnet50", dict(widths=TINY, groups=2, width_per_group=32), 7, (32, 32)),
    # DeepMind (RobustBench's own code): ReLU; Swish with CIFAR-100 statistics and classes;
    # the PreActResNet with its 3x3 projection shortcuts
    "dm_wrn_10_1_relu": ("dm_wide_resnet", dict(depth=10, width=1), 10, (32, 32)),
    "dm_wrn_10_1_swish": (
        "dm_wide_resnet",
        dict(
            depth=10,
            width=1,
            activation="swish",
            mean=[0.5071, 0.4865, 0.4409],
            std=[0.2673, 0.2564, 0.2762],
        ),
        100,
        (32, 32),
    ),
    "dm_preact18_w4_swish": (
        "dm_preact_resnet",
        dict(widths=TINY, activation="swish"),
        10,
        (32, 32),
    ),
}
PT_FIXTURE = ("wrn_10_1_dataparallel", "wide_resnet", dict(depth=10, widen_factor=1), 10, (32, 32))

# full-size definitions: key names, shapes and parameter counts only
FULL = {
    "wrn_28_10": ("wide_resnet", dict(depth=28, widen_factor=10), 10),
    "wrn_28_10_sub_block1": ("wide_resnet", dict(depth=28, widen_factor=10, sub_block1=True), 10),
    "wrn_34_10": ("wide_resnet", dict(depth=34, widen_factor=10), 10),
    "wrn_70_16": ("wide_resnet", dict(depth=70, widen_factor=16), 10),
    "wrn_70_16_cifar100": ("wide_resnet", dict(depth=70, widen_factor=16), 100),
    "preact_resnet18": ("preact_resnet18", {}, 10),
    "preact_resnet18_bn": ("preact_resnet18", dict(bn_before_fc=True), 10),
    "resnet18": ("resnet18", {}, 1000),
    "resnet50": ("resnet50", {}, 1000),
    "resnet50_cifar10": ("resnet50", {}, 10),
    "resnext50_32x4d": ("resnet50", dict(groups=32, width_per_group=4), 1000),
    "wide_resnet50_2": ("resnet50", dict(width_per_group=128), 1000),
    "dm_wrn_28_10_swish": ("dm_wide_resnet", dict(depth=28, width=10, activation="swish"), 10),
    "dm_preact_resnet18": ("dm_preact_resnet", {}, 10),
    "dm_preact_resnet34_cifar100": ("dm_preact_resnet", dict(depth=34), 100),
}


def randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Random affine parameters and running statistics in every BatchNorm (eval mode uses
    them)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))


def reference(architecture, config, num_classes, hw, seed):
    """Model with seeded weights, images, its float32 and float64 eval-mode logits, and the
    float64 input gradient of ``logit_1 - logit_0`` (the quantity DeepFool and curvature
    differentiate; max pooling and ReLU give their subgradients as PyTorch defines them)."""
    torch.manual_seed(seed)
    model = build(architecture, num_classes, **config)
    randomise_batchnorm(model, torch.Generator().manual_seed(seed + 1))
    model.eval()
    rng = np.random.default_rng(seed)
    images = rng.random((4, 3, *hw), dtype=np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(images)).numpy()
        model64 = build(architecture, num_classes, **config).double()
        model64.load_state_dict(model.state_dict())
        model64.eval()
        logits64 = model64(torch.from_numpy(images).double()).numpy()
    x64 = torch.from_numpy(images).double().requires_grad_(True)
    out = model64(x64)
    (out[:, 1] - out[:, 0]).sum().backward()
    return model, images, logits, (logits64, x64.grad.numpy())


def write_io(out: Path, name, architecture, config, num_classes, images, logits, logits64):
    spec = json.dumps({"architecture": architecture, "num_classes": num_classes, "config": config})
    logits64, grad64 = logits64
    np.savez(
        out / f"{name}_io.npz",
        images=images,
        logits=logits.astype(np.float32),
        logits64=logits64.astype(np.float64),
        grad64=grad64.astype(np.float64),
        spec=np.array(spec),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "torch"
    parser.add_argument("--out", type=Path, default=default, help="output folder")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(FIXTURES),
        default=None,
        help="write only these numerical fixtures (and torch_keys.json)",
    )
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    for seed, (name, (arch, config, k, hw)) in enumerate(FIXTURES.items()):
        if args.only is not None and name not in args.only:
            continue
        model, images, logits, logits64 = reference(arch, config, k, hw, seed)
        sd = {key: v.detach().contiguous() for key, v in model.state_dict().items()}
        save_file(sd, str(out / f"{name}.safetensors"))
        write_io(out, name, arch, config, k, images, logits, logits64)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name}: {n} parameters, logits max |.| {np.abs(logits).max():.3g}")

    name, arch, config, k, hw = PT_FIXTURE
    if args.only is None:
        model, images, logits, logits64 = reference(arch, config, k, hw, 100)
        wrapped = {"state_dict": {"module." + key: v for key, v in model.state_dict().items()}}
        torch.save(wrapped, out / f"{name}.pt")
        write_io(out, name, arch, config, k, images, logits, logits64)
        print(f"{name}.pt written")

    keys = {}
    for name, (arch, config, k) in FULL.items():
        with torch.device("meta"):
            model = build(arch, k, **config)
        keys[name] = {
            "architecture": arch,
            "num_classes": k,
            "config": config,
            "num_params": sum(p.numel() for p in model.parameters()),
            "keys": {key: list(v.shape) for key, v in model.state_dict().items()},
        }
        print(f"{name}: {keys[name]['num_params']:,} parameters")
    (out / "torch_keys.json").write_text(json.dumps(keys, indent=1) + "\n")
    total = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"fixtures in {out}: {total / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
