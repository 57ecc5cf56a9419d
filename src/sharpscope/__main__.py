import sys

from sharpscope.cli import main

sys.exit(main())
