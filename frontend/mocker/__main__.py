"""`python -m frontend.mocker`: the mock engine worker; the code is in frontend/engines/mocker/."""

import sys

from frontend.engines.mocker.main import main

if __name__ == "__main__":
    sys.exit(main())
