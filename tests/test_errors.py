"""errors.py: run_main turns a UserError into one line `error: ...` and exit status 2 (anything else
keeps its traceback); a UserError raised in a data-loader worker keeps its message; SIGTERM exits
through Python and the handler is put back; library errors become short clauses; --help appends
each default once; argparse's errors are UserErrors and negative numbers in exponent form are
values. (The user-facing catalogue across the scripts: tests/test_bad_inputs.py.)"""
import argparse
import errno
import os
import signal
import threading
import time

import pytest
import torch

import errors
from errors import UserError


# ---------------------------------------------------------------------------------------------
# run_main and the messages it prints
# ---------------------------------------------------------------------------------------------


def test_run_main_prints_one_line_and_exits_2(capsys):
  def main(value, scale=1):
    if value < 0:
      raise UserError('--value %d is negative;\n    use a value >= 0' % value)
    if value == 0:
      raise ValueError('a bug')
    return value * scale
  assert errors.run_main(main, 2, scale=3) == 6
  with pytest.raises(SystemExit) as e:
    errors.run_main(main, -1)
  assert e.value.code == 2
  assert capsys.readouterr() == ('', 'error: --value -1 is negative; use a value >= 0\n')
  with pytest.raises(ValueError, match='a bug'):  # a bug is no user error: traceback kept
    errors.run_main(main, 0)
  assert capsys.readouterr().err == ''


class Unreadable(torch.utils.data.Dataset):
  def __len__(self):
    return 2

  def __getitem__(self, index):
    raise UserError('item %d is unreadable; check the data' % index)


def test_a_user_error_from_a_loader_worker_keeps_its_message():
  """torch re-raises a worker's exception with the worker's whole traceback as its text."""
  loader = torch.utils.data.DataLoader(Unreadable(), num_workers=1)
  with pytest.raises(UserError) as e:
    next(iter(loader))
  assert 'Original Traceback' in str(e.value)  # what a plain str() would print
  assert errors.user_message(e.value) == (
      'item 0 is unreadable; check the data (in data-loader worker 0)')
  assert errors.user_message(UserError('as it is')) == 'as it is'


def test_reason_is_the_first_sentence_and_os_reason_names_a_full_disk():
  assert errors.reason(RuntimeError('Weights only load failed.  In PyTorch 2.6 we changed\n'
                                    'the default. Re-running it')) == 'Weights only load failed'
  assert errors.reason(ValueError('x' * 50), limit=20) == 'x' * 17 + '...'
  assert errors.os_reason(OSError(errno.ENOSPC, 'No space left on device')) == 'the disk is full'
  assert errors.os_reason(OSError(errno.EACCES, 'Permission denied')) == 'Permission denied'
  assert errors.os_reason(OSError('no errno')) == 'no errno'


# ---------------------------------------------------------------------------------------------
# SIGTERM
# ---------------------------------------------------------------------------------------------


def test_sigterm_exits_through_python_and_puts_the_handler_back(capsys):
  def fallback(signum, frame):  # without sigterm_exits' handler, a failure rather than a kill
    raise AssertionError('sigterm_exits set no handler')
  previous = signal.signal(signal.SIGTERM, fallback)
  try:
    cleaned = []
    with pytest.raises(SystemExit) as e:
      with errors.sigterm_exits('Stopped by SIGTERM'):
        try:
          os.kill(os.getpid(), signal.SIGTERM)
          time.sleep(5)  # the handler interrupts this
        finally:
          cleaned.append(True)  # what the default action would skip
    assert e.value.code == 128 + signal.SIGTERM and cleaned == [True]
    assert capsys.readouterr().err == 'Stopped by SIGTERM\n'
    assert signal.getsignal(signal.SIGTERM) is fallback
    # Outside the main thread no handler can be set: the block just runs.
    ran = []

    def worker():
      with errors.sigterm_exits('never'):
        ran.append(signal.getsignal(signal.SIGTERM))
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert ran == [fallback]
  finally:
    signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------
# Flags: --help and argparse's errors
# ---------------------------------------------------------------------------------------------


def parser_with_every_kind_of_flag(**kwargs):
  parser = errors.ArgumentParser(prog='script.py', **kwargs)
  parser.add_argument('path', help='the input')
  parser.add_argument('--lr', type=float, default=1e-4, help='learning rate')
  parser.add_argument('--name', default='', help='a name')
  parser.add_argument('--root', default=None, help='a folder')
  parser.add_argument('--fast', action='store_true', help='go fast')
  parser.add_argument('--no_check', action='store_false', dest='check', help='skip the check')
  parser.add_argument('--cache', action='store_true', default=True, help='keep a cache')
  parser.add_argument('--steps', type=int, default=3, help='steps (default 3: enough here)')
  return parser


def test_help_appends_each_default_once(monkeypatch):
  monkeypatch.setenv('COLUMNS', '200')  # one line per flag
  text = parser_with_every_kind_of_flag().format_help()
  lines = {line.split()[0]: ' '.join(line.split()[1:]) for line in text.splitlines()
           if line.startswith('  ')}
  assert lines['path'] == 'the input'  # positionals have no default to show
  assert lines['-h,'] == '--help show this help message and exit'
  assert lines['--lr'] == 'LR learning rate (default: 0.0001)'
  assert lines['--name'] == 'NAME a name (default: none)'
  assert lines['--root'] == 'ROOT a folder (default: none)'
  assert lines['--fast'] == 'go fast (default: off)'
  assert lines['--no_check'] == 'skip the check (default: off)'
  assert lines['--cache'] == 'keep a cache (default: on)'
  assert lines['--steps'] == 'STEPS steps (default 3: enough here)'  # says it itself


def test_doc_help_formatter_keeps_the_description_as_written(monkeypatch):
  monkeypatch.setenv('COLUMNS', '200')
  description = 'Usage:\n\n    python script.py DATA --lr 0.1\n\nkept  as written.'
  parser = argparse.ArgumentParser(prog='script.py', description=description,
                                   formatter_class=errors.DocHelpFormatter)
  parser.add_argument('--lr', type=float, default=0.5, help='learning rate')
  text = parser.format_help()
  assert description in text and 'learning rate (default: 0.5)' in text


def test_argument_errors_are_one_line_user_errors_and_negative_exponents_are_values():
  parser = parser_with_every_kind_of_flag()
  with pytest.raises(UserError, match=r'^unrecognized arguments: --lrr 1; see script\.py --help$'):
    parser.parse_args(['data', '--lrr', '1'])
  with pytest.raises(UserError, match=r"^argument --lr: invalid float value: 'x'; see script"):
    parser.parse_args(['data', '--lr', 'x'])
  with pytest.raises(UserError, match=r'^argument --name: expected one argument \(a value that '
                                      r'starts with "-" is written --name=-VALUE\); see script'):
    parser.parse_args(['data', '--name', '-x'])
  for value, expected in (('-1e-4', -1e-4), ('-2.5E+3', -2500.0), ('-0.5', -0.5), ('-.5', -0.5),
                          ('-3', -3.0)):
    assert parser.parse_args(['data', '--lr', value]).lr == expected, value
  assert parser.parse_args(['data', '--lr=-1e-4']).lr == -1e-4
