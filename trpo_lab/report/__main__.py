import sys

from trpo_lab.report.page import main

sys.exit(main())
