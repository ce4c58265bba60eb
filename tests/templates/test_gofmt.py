"""Go's fmt as the print functions use it, verb by verb and flag by flag: each
expected string is what Go's fmt.Sprintf / Sprint / Sprintln print."""

from __future__ import annotations

from typing import Any

import pytest

from trellis.templates.gofmt import go_quote, sprint, sprintf, sprintln
from trellis.templates.values import ExecFailure

INF = float("inf")
NAN = float("nan")

CASES: list[tuple[str, tuple[Any, ...], str]] = [
    # integers: bases, # prefixes, signs, width, zero padding
    ("%x %X %o %b", (255, 255, 8, 5), "ff FF 10 101"),
    ("%#x %#X %#o %#b", (255, 255, 8, 5), "0xff 0XFF 010 0b101"),
    ("%x|%#x", (-255, -255), "-ff|-0xff"),
    ("%+d|% d|%+d|% d", (5, 5, -5, -5), "+5| 5|-5|-5"),
    ("%5d|%-5d|%05d|%+05d|%05d", (42, 42, 42, 42, -42), "   42|42   |00042|+0042|-0042"),
    ("%2d|%3d", (123, 123), "123|123"),
    ("%c%c|%c|%c", (72, 105, -1, 1114112), "Hi|\ufffd|\ufffd"),
    ("%c", (1114111,), "\U0010ffff"),
    ("%q|%q|%q", (65, 10, -1), "'A'|'\\n'|'\ufffd'"),
    ("%U|%U", (65, 0x1F600), "U+0041|U+1F600"),
    ("%e|%.1f", (1, 2), "1.000000e+00|2.0"),
    ("%d|%v", (2.0, -3.0), "2|-3"),
    ("%d", (2.5,), "%!d(float64=2.5)"),
    ("%t", (1,), "%!t(int=1)"),
    # floats
    ("%v|%g|%G", (2.5, 1e21, 1e21), "2.5|1e+21|1E+21"),
    ("%.2f|%F|%e|%E", (3.14159, 1.5, 1234.5, 1234.5), "3.14|1.500000|1.234500e+03|1.234500E+03"),
    ("%.3g|%.2v|%.3G", (1234.5, 3.14159, 0.000012345), "1.23e+03|3.1|1.23E-05"),
    ("%08.3f|%+.1f|% .1f|%-7.2f|", (-3.14159, 2.0, 2.0, 1.5), "-003.142|+2.0| 2.0|1.50   |"),
    ("%.f|%5.1f", (3.7, 3.14159), "4|  3.1"),
    ("%s", (1.5,), "%!s(float64=1.5)"),
    # infinities keep their sign, NaN gets one only when asked; neither is zero-padded
    ("%f|%+f|% f|%v|%6f|%06f", (INF,) * 6, "+Inf|+Inf| Inf|+Inf|  +Inf|  +Inf"),
    ("%f|%+f|% f|%v|%6f", (-INF,) * 5, "-Inf|-Inf|-Inf|-Inf|  -Inf"),
    ("%f|%+f|% f|%v|%6f|%06f", (NAN,) * 6, "NaN|+NaN| NaN|NaN|   NaN|   NaN"),
    # ints: the sign of zero and -1, zero padding in other bases, characters at the ends of Unicode
    ("%x|%x|%x|%05x|%-5x|", (0, -1, 1, 255, 255), "0|-1|1|000ff|ff   |"),
    ("%c|%c", (0, 0x10FFFF), "\x00|\U0010ffff"),
    ("%q|%q|%q", (0, 0x10FFFF, 0x10FFFE), "'\\x00'|'\\U0010ffff'|'\\U0010fffe'"),
    ("%q|%c", (0x110000, 0x110000), "'\ufffd'|\ufffd"),  # past the last character
    # strings
    ("%.2s|%.2q|%.9s", ("abcdef", "abcdef", "abc"), 'ab|"ab"|abc'),
    ("%5s|%-5s|%1s", ("ab", "ab", "abc"), "   ab|ab   |abc"),
    ("%#q|%#q", ("ab", "a`b"), '`ab`|"a`b"'),
    ("%x|%X|% x|% X", ("hi?", "hi?", "hi!", "é"), "68693f|68693F|68 69 21|C3 A9"),
    ("%.1d", ("abc",), "%!d(string=abc)"),
    ("%d", ("x",), "%!d(string=x)"),
    # nil, bools, collections
    ("%v|%d|%T", (None, None, None), "<nil>|%!d(<nil>)|<nil>"),
    ("%t|%v|%d|%T", (True, False, True, True), "true|false|%!d(bool=true)|bool"),
    ("%T|%T|%T|%T", (1, 1.5, "s", [1]), "int|float64|string|[]interface {}"),
    ("%d|%x|%v", ([1, 2], [10, 11], ["a", None]), "[1 2]|[a b]|[a <nil>]"),
    ("%v|%d", ({"b": 2, "a": 1}, {"a": 1}), "map[a:1 b:2]|map[%!d(string=a):1]"),
    ("%-6v|%6v|", ([1], [1]), "[1]   |   [1]|"),
    ("%.1f", ([1.25, 2],), "[1.2 2.0]"),
    # the format itself
    ("100%%|%d%%", (5,), "100%|5%"),
    ("%d %d", (1,), "1 %!d(MISSING)"),
    ("%d", (1, 2, "a", None), "1%!(EXTRA int=2, string=a, <nil>)"),
    ("no verbs", (), "no verbs"),
    ("%*d|%*d|", (5, 42, -5, 42), "   42|42   |"),
    ("%*d", ("x", 42), "%!(BADWIDTH)42"),
    ("%*d", (True, 42), "%!(BADWIDTH)42"),
    ("%.*f|%.*f", (2, 3.14159, 0, 2.5), "3.14|2"),
    ("%.*f", (-1, 3.0), "%!(BADPREC)3.000000"),
    ("%*d", (), "%!(BADWIDTH)%!d(MISSING)"),
    ("%.*d", (), "%!(BADPREC)%!d(MISSING)"),
    ("%*s|", (-1, ""), " |"),
    ("%.*f", (None, 3.0), "%!(BADPREC)3.000000"),
    ("%-+5d|%+-5d|", (3, 3), "+3   |+3   |"),
    ("%", (), "%!(NOVERB)"),
    ("%5", (1,), "%!(NOVERB)%!(EXTRA int=1)"),
    ("%.", (), "%!(NOVERB)"),
    ("a%", (), "a%!(NOVERB)"),
]


@pytest.mark.parametrize(("template", "args", "printed"), CASES, ids=[c[0] for c in CASES])
def test_sprintf_prints_like_go(template: str, args: tuple[Any, ...], printed: str) -> None:
    assert sprintf(template, args) == printed


def test_sprint_puts_a_space_only_between_two_non_strings() -> None:
    assert sprint((1, 2)) == "1 2"
    assert sprint(("a", 1)) == "a1"
    assert sprint((1, "a")) == "1a"
    assert sprint(("a", "b")) == "ab"
    assert sprint((1, 2, "x", 3, None)) == "1 2x3 <nil>"
    assert sprint(()) == ""


def test_sprintln_separates_everything_and_ends_the_line() -> None:
    assert sprintln((1, "a", None)) == "1 a <nil>\n"
    assert sprintln(()) == "\n"


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
        ("\x01\x7f", '"\\x01\\x7f"'),
        ("\u0085\u200b", '"\\u0085\\u200b"'),
        ("\x7f\x80", '"\\x7f\\u0080"'),  # where \x stops and \u starts
        ("\uffff", '"\\uffff"'),  # the last character \u can show
        ("\U000e0001", '"\\U000e0001"'),
        ("é😀", '"é😀"'),
    ],
)
def test_go_quote_escapes_what_is_not_printable(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


def test_a_value_that_is_not_data_is_refused_not_printed() -> None:
    with pytest.raises(ExecFailure, match="cannot print a value of type object: templates print only"):
        sprintf("%d", (object(),))
