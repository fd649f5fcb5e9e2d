import sys

from animax.app.cli import main

sys.exit(main())
