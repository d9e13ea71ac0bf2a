"""`python -m frontend.embedding_worker`: the embedding worker; the code is in frontend/engines/embedding/."""

import sys

from frontend.engines.embedding.main import main

if __name__ == "__main__":
    sys.exit(main())
