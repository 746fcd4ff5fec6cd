import sys

from livelearn.cli import main

sys.exit(main())
