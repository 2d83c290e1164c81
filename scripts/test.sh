#!/bin/bash
# The whole test suite (CPU, about 7 minutes on 2 cores). Extra flags go to pytest.
set -e
cd "$(dirname "$0")/.."
python -m pytest tests "$@"
