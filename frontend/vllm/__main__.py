"""`python -m frontend.vllm`: the vLLM worker; the code is in frontend/engines/vllm/."""

import sys

from frontend.engines.vllm.main import main

if __name__ == "__main__":
    sys.exit(main())
