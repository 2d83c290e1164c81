"""User-facing errors: one line that says what is wrong and what to do.

Code anywhere raises UserError for bad input (flags, files, data); every script runs its main()
through `run_main`, which prints the message without a traceback and exits non-zero. Anything
else is a bug and keeps its traceback.
"""
import sys


class UserError(Exception):
  """Bad input from the user: the message must say what is wrong and how to fix it."""


def run_main(main, *args, **kwargs):
  """Call main(); turn a UserError into `error: <message>` on stderr and exit status 2."""
  try:
    return main(*args, **kwargs)
  except UserError as e:
    message = ' '.join(str(e).split())  # always exactly one line
    print('error: %s' % message, file=sys.stderr, flush=True)
    sys.exit(2)
