#!/bin/bash
# The whole test suite (CPU, 3-8 minutes on 2 cores). Extra flags go to pytest.
set -e
cd "$(dirname "$0")/.."
python -m pytest tests "$@"
