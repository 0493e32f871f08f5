import sys

from buildtool.cli import main

sys.exit(main())
