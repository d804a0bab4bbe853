"""Reading a letter source folder (placeholder until the parser lands)."""


class LetterSourceError(ValueError):
    """A malformed letter source."""


def load_letter(folder):  # pragma: no cover - replaced by the parser
    raise LetterSourceError(f"{folder}: parser not written yet")
