import sys

from morphable.cli import main

sys.exit(main())
