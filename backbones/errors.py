"""The one base class of every "your input is wrong" error in this toolkit.

Tools print such an error as one line and exit with code 2; every other exception is a bug and keeps its
traceback. It lives in the lowest package (the backbone does not depend on the task code) and subclasses
ValueError, so `except ValueError` in user code still catches it.
"""


class UserError(ValueError):
    """Bad input (a config value, a file, a checkpoint, a dataset, an unreachable download): the message
    names it and says what was expected."""
