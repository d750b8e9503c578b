"""What a name or an address looks like, for telling apart things people must not confuse: user
names (four eyes: ``ana`` and ``Аna`` are one person to a reader) and CAP senders (a tenant's
address written with a Cyrillic ``о``).

>>> skeleton("Ana") == skeleton("\u0430na") == skeleton("ANA")
True
>>> skeleton("\u03a4iago") == skeleton("Tiago")  # a Greek capital Tau
True
>>> skeleton("jo\u00e3o") == skeleton("joa\u0303o"), skeleton("joão") == skeleton("joao")
(True, False)
>>> skeleton("ana\u034f") == skeleton("ana") == skeleton("ana\u200b")  # invisible marks
True
"""

from __future__ import annotations

import re
import unicodedata

# letters of other scripts drawn like Latin ones: capitals (mapped before case folding, since
# several fold to small letters that are drawn otherwise) and small letters (after it)
_CAPITALS = str.maketrans(
    dict(
        zip(
            "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧАВЕКМНОРСТХЅІЈԚԜ",
            "ABEZHIKMNOPTYXABEKMHOPCTXSIJQW",
            strict=True,
        )
    )
)
_SMALL = str.maketrans(dict(zip("аеорсухіјѕԁһӏԛԝкοανικρυχϲ", "aeopcyxijsdhlqwkoavikpuxc", strict=True)))
#: characters drawn as nothing (Unicode default-ignorable code points, and format characters)
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


def invisible(text: str) -> bool:
    """Does ``text`` hold a character drawn as nothing?"""
    return _INVISIBLE.search(text) is not None


def _visible(text: str) -> str:
    return unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))


def skeleton(text: str) -> str:
    """``text`` as it looks: invisible characters dropped, NFKC, look-alike capitals and small
    letters of other scripts as the Latin ones, case folded."""
    return _visible(text).translate(_CAPITALS).casefold().translate(_SMALL)


def skeletons(text: str) -> frozenset[str]:
    """Both ways ``text`` may be read: as it looks (:func:`skeleton`) and as its case folds
    first (``Вера`` and ``вера`` are one name in Cyrillic, though the capital В looks like a
    Latin B). Two texts that share one are the same to a reader.

    >>> bool(skeletons("Вера") & skeletons("вера")), bool(skeletons("Tiago") & skeletons("Τiago"))
    (True, True)
    """
    return frozenset((skeleton(text), _visible(text).casefold().translate(_SMALL)))
