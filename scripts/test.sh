#!/bin/bash
# The lint (ruff, ruff.toml) and the whole test suite (CPU, 3-8 minutes on 2 cores). Extra flags
# go to pytest.
set -e
cd "$(dirname "$0")/.."
ruff check .
python -m pytest tests "$@"
