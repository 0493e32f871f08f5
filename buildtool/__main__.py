import sys

from buildtool.cli.main import main

sys.exit(main())
