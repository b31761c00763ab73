"""Imported by a probe's forkserver (``cycle.FORKSERVER_PRELOAD``) for one side effect: the
forkserver registers its stack dump (pqd.runner.stacks) like the runner, the Manager and the
workers.

A forkserver runs no code of ours but its preload imports, so this module exists only for that
import and nothing else imports it.
"""

from pqd.runner import stacks

stacks.install()
