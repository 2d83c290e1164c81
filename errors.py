"""User-facing errors: one line that says what is wrong and what to do.

Code anywhere raises UserError for bad input (flags, files, data); every script runs its main()
through `run_main`, which prints the message without a traceback and exits non-zero. Anything
else is a bug and keeps its traceback. Scripts build their flags with `ArgumentParser`, so a
mistyped flag is one such line too.
"""
import argparse
import errno
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


def reason(exception, limit=300):
  """A library exception as a short clause of a one-line error: its first sentence (the rest is
  often advice for another situation, such as torch's to turn weights_only off)."""
  text = ' '.join(str(exception).split()).split('. ')[0]
  return text if len(text) <= limit else text[:limit - 3] + '...'


def os_reason(e):
  """An OSError as a short clause: 'the disk is full' for ENOSPC, else its strerror."""
  return 'the disk is full' if e.errno == errno.ENOSPC else e.strerror or str(e)


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose errors are UserErrors: one line instead of argparse's usage block (dozens of
  lines for the shared parser, with the error at the end)."""

  def error(self, message):
    raise UserError('%s; see %s --help' % (message, self.prog))
