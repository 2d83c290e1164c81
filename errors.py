"""User-facing errors: one line that says what is wrong and what to do.

Code anywhere raises UserError for bad input (flags, files, data); every script runs its main()
through `run_main`, which prints the message without a traceback and exits non-zero. Anything
else is a bug and keeps its traceback. Scripts build their flags with `ArgumentParser`, so a
mistyped flag is one such line too, and --help appends every default (HelpFormatter).
"""
import argparse
import contextlib
import errno
import re
import signal
import sys
import threading


class UserError(Exception):
  """Bad input from the user: the message must say what is wrong and how to fix it."""


def run_main(main, *args, **kwargs):
  """Call main(); turn a UserError into `error: <message>` on stderr and exit status 2."""
  try:
    return main(*args, **kwargs)
  except UserError as e:
    message = ' '.join(user_message(e).split())  # always exactly one line
    print('error: %s' % message, file=sys.stderr, flush=True)
    sys.exit(2)


def user_message(error):
  """The message of a UserError. One raised in a data-loader worker reaches the main process
  re-raised with the worker's whole traceback as its text: keep the message at its end."""
  text = str(error)
  if 'Original Traceback' not in text:
    return text
  found = re.search(r'^\S*UserError: (.*)\Z', text.rstrip(), re.M | re.S)
  worker = re.search(r'in DataLoader worker process (\d+)', text)
  if not found:
    return text
  return found.group(1) + (' (in data-loader worker %s)' % worker.group(1) if worker else '')


@contextlib.contextmanager
def sigterm_exits(message):
  """SIGTERM (a scheduler's stop, `kill`) exits through Python, so that `finally` blocks remove
  temporary files (the default action ends the process without them); prints `message`."""
  def stop(signum, frame):
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)
  if threading.current_thread() is not threading.main_thread():  # only it may set handlers
    yield
    return
  previous = signal.signal(signal.SIGTERM, stop)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def reason(exception, limit=300):
  """A library exception as a short clause of a one-line error: its first sentence (the rest is
  often advice for another situation, such as torch's to turn weights_only off)."""
  text = ' '.join(str(exception).split()).split('. ')[0]
  return text if len(text) <= limit else text[:limit - 3] + '...'


def os_reason(e):
  """An OSError as a short clause: 'the disk is full' for ENOSPC, else its strerror."""
  return 'the disk is full' if e.errno == errno.ENOSPC else e.strerror or str(e)


class HelpFormatter(argparse.HelpFormatter):
  """--help appends every option's default, so no help text writes it out: "(default: X)",
  "none" for an empty one, "on"/"off" for a switch. A help text that explains its default
  itself (it says "(default") is left as it is."""

  def _get_help_string(self, action):
    text = action.help or ''
    if ('(default' in text or not action.option_strings or action.default is argparse.SUPPRESS
        or isinstance(action, argparse._HelpAction)):
      return text
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
      return text + ' (default: %s)' % ('on' if action.default == action.const else 'off')
    if action.default in ('', None):
      return text + ' (default: none)'
    return text + ' (default: %(default)s)'


class DocHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
  """HelpFormatter for a parser whose description is the script's docstring, kept as written."""


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose errors are UserErrors: one line instead of argparse's usage block (dozens of
  lines for the shared parser, with the error at the end). A negative number in exponent form
  (--G_lr -1e-4) is a value, as -0.0001 always was."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault('formatter_class', HelpFormatter)
    super(ArgumentParser, self).__init__(*args, **kwargs)
    self._negative_number_matcher = re.compile(r'^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$')

  def error(self, message):
    flag = re.match(r'argument ([^/:]+)\S*: expected one argument', message)
    if flag:  # most often a value that argparse took for a flag
      message += ' (a value that starts with "-" is written %s=-VALUE)' % flag.group(1)
    raise UserError('%s; see %s --help' % (message, self.prog))
