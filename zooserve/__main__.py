import sys

from zooserve.cli import main

sys.exit(main())
