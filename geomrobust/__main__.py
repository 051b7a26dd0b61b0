import sys

from geomrobust.cli import main

sys.exit(main())
