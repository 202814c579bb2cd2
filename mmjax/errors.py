"""One error type for everything a user can fix: it prints as a single line naming what and where."""


class MmjaxError(Exception):
  """A user-facing error: bad config key, missing data, bad shape, non-finite loss...

  The message is one line that names the file/key/step at fault and says what to do.
  `mmjax.main` prints it as `mmjax: error: <message>` and exits with status 2.
  """
