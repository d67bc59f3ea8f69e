"""Go's fmt as templates print through it: %v of each value (what `{{ pipeline }}` prints), Sprint,
Sprintln and Sprintf with Go's verbs, flags, width, precision, argument indexes and in-band errors
(%!d(string=x), %!s(MISSING), %!(EXTRA ...)). Types beyond Go's basic ones print as the Model says."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from shared.gotemplate.errors import CallError
from shared.gotemplate.strconv import can_backquote, format_float, go_quote
from shared.gotemplate.values import MAX_STRING, Model, bounded, sorted_keys

__all__ = ["format_float_verb", "format_value", "print_value", "sprint", "sprintf", "sprintln"]


@dataclass(slots=True)
class _Spec:
    """One Printf directive's flags, width and precision (fmt.fmt's flags)."""

    minus: bool = False
    plus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    plus_v: bool = False  # %+v: field names
    sharp_v: bool = False  # %#v: Go syntax
    width: int | None = None
    prec: int | None = None


_PLAIN = _Spec()


def format_value(value: object, model: Model) -> str:
    """fmt's %v of value."""
    return _fmt_arg(value, "v", _PLAIN, model)


def print_value(value: object, model: Model) -> str:
    """What `{{ pipeline }}` prints: fmt's %v, or "<no value>" for a missing (nil) value."""
    return "<no value>" if value is None else _fmt_arg(value, "v", _PLAIN, model)


def sprint(args: Sequence[object], model: Model) -> str:
    """fmt.Sprint: operands as %v, with a space between two operands when neither is a string."""

    def pieces() -> list[str]:
        out: list[str] = []
        for i, arg in enumerate(args):
            if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
                out.append(" ")
            out.append(_fmt_arg(arg, "v", _PLAIN, model))
        return out

    return bounded(pieces())


def sprintln(args: Sequence[object], model: Model) -> str:
    """fmt.Sprintln: operands as %v separated by spaces, then a newline."""
    return bounded((_fmt_arg(arg, "v", _PLAIN, model) for arg in args), " ") + "\n"


def sprintf(fmt: str, args: Sequence[object], model: Model) -> str:
    """fmt.Sprintf: Go's verbs (%v %s %q %d %b %o %O %x %X %c %U %e %E %f %F %g %G %t %T %%), flags
    (+ - # space 0), width, precision, `*` and [n] argument indexes, and Go's in-band errors."""
    return _Printf(fmt, args, model).run()


# One operand ----------------------------------------------------------------------------
def _pad(text: str, spec: _Spec, zero: bool | None = None) -> str:
    if spec.width is None or len(text) >= spec.width:
        return text
    fill = spec.width - len(text)
    if spec.minus:
        return text + " " * fill
    use_zero = spec.zero if zero is None else zero
    return ("0" if use_zero else " ") * fill + text


def _bad_verb(verb: str, arg: object, model: Model) -> str:
    if arg is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({model.type_name(arg)}={_fmt_arg(arg, 'v', _PLAIN, model)})"


def _fmt_arg(arg: object, verb: str, spec: _Spec, model: Model) -> str:
    """fmt's printArg: one operand under one verb, recursively for lists, maps and structs."""
    if arg is None:
        return _pad("<nil>", spec) if verb in "Tv" else _bad_verb(verb, arg, model)
    if verb == "T":
        return _pad(model.type_name(arg), spec)
    if isinstance(arg, bool):
        return _pad("true" if arg else "false", spec) if verb in "tv" else _bad_verb(verb, arg, model)
    if isinstance(arg, str):
        return _fmt_str(arg, verb, spec, model)
    stringer = model.stringer(arg) if verb in "vsqxX" else None
    if stringer is not None:
        return _fmt_str(stringer, "s" if verb == "v" else verb, spec, model)
    if isinstance(arg, int):
        return _fmt_int(arg, verb, spec, model)
    if isinstance(arg, float):
        return _fmt_float(arg, verb, spec, model)
    if isinstance(arg, list | tuple):
        return "[" + bounded((_fmt_arg(v, verb, spec, model) for v in arg), " ") + "]"
    if isinstance(arg, dict):
        items = (
            (_fmt_arg(k, verb, spec, model), _fmt_arg(arg[k], verb, spec, model)) for k in sorted_keys(arg)
        )
        if spec.sharp_v:
            return model.type_name(arg) + "{" + bounded((f"{k}:{v}" for k, v in items), ", ") + "}"
        return "map[" + bounded((f"{k}:{v}" for k, v in items), " ") + "]"
    fields = model.struct(arg)
    if fields is None:
        return _pad(str(arg), spec) if verb == "v" else _bad_verb(verb, arg, model)
    named = spec.plus_v or spec.sharp_v
    parts = ((f"{name}:" if named else "") + _fmt_arg(value, verb, spec, model) for name, value in fields)
    if spec.sharp_v:
        return model.type_name(arg).lstrip("*") + "{" + bounded(parts, ", ") + "}"
    return ("&" if model.is_pointer(arg) else "") + "{" + bounded(parts, " ") + "}"


def _fmt_str(text: str, verb: str, spec: _Spec, model: Model) -> str:
    if spec.prec is not None:
        text = text[: spec.prec]
    if verb == "v" and spec.sharp_v:
        return _pad(go_quote(text), spec)
    if verb in "vs":
        return _pad(text, spec)
    if verb == "q":
        if spec.sharp and can_backquote(text):
            return _pad(f"`{text}`", spec)
        return _pad(go_quote(text, ascii_only=spec.plus), spec)
    if verb in "xX":
        hex_digits = [f"{b:02x}" if verb == "x" else f"{b:02X}" for b in text.encode()]
        prefix = "0" + verb if spec.sharp else ""
        # "% x" separates the bytes (each with its own 0x under #); otherwise one prefix for all.
        if spec.space:
            return _pad(" ".join(prefix + h for h in hex_digits), spec)
        return _pad(prefix + "".join(hex_digits) if hex_digits else "", spec)
    return _bad_verb(verb, text, model)


_BASES = {"d": 10, "v": 10, "b": 2, "o": 8, "O": 8, "x": 16, "X": 16}


def _fmt_int(number: int, verb: str, spec: _Spec, model: Model) -> str:
    if verb in _BASES:
        return _fmt_integer(number, _BASES[verb], verb, spec)
    if verb == "c":
        return _pad(chr(number) if 0 <= number <= 0x10FFFF else "\ufffd", spec)
    if verb == "q":
        return _pad(go_quote(chr(number) if 0 <= number <= 0x10FFFF else "\ufffd", spec.plus, "'"), spec)
    if verb == "U":
        text = f"U+{number:04X}" if number >= 0 else f"U+{number & 0xFFFFFFFFFFFFFFFF:04X}"
        if spec.sharp and 0 <= number <= 0x10FFFF and chr(number).isprintable():
            text += f" '{chr(number)}'"
        return _pad(text, spec, zero=False)
    return _bad_verb(verb, number, model)


def _fmt_integer(number: int, base: int, verb: str, spec: _Spec) -> str:
    """fmt.fmtInteger: precision (or the 0 flag) pads the digits, then the base prefix and sign go on."""
    negative, magnitude = number < 0, abs(number)
    if spec.prec is not None:
        prec = spec.prec
        if prec == 0 and magnitude == 0:
            return " " * (spec.width or 0)
    elif spec.zero and not spec.minus and spec.width is not None:
        prec = spec.width - (1 if negative or spec.plus or spec.space else 0)
    else:
        prec = 0
    digits = {2: "b", 8: "o", 10: "d", 16: "X" if verb == "X" else "x"}[base]
    text = format(magnitude, digits).rjust(prec, "0")
    if spec.sharp:
        if base == 2:
            text = "0b" + text
        elif base == 8 and not text.startswith("0"):
            text = "0" + text
        elif base == 16:
            text = ("0X" if verb == "X" else "0x") + text
    if verb == "O":
        text = "0o" + text
    sign = "-" if negative else "+" if spec.plus else " " if spec.space else ""
    return _pad(sign + text, spec, zero=False)


def _fmt_float(value: float, verb: str, spec: _Spec, model: Model) -> str:
    """fmt.fmtFloat: strconv's digits, then Go's sign, Inf/NaN and zero-padding rules."""
    if verb == "v":
        verb, prec = "g", -1
    elif verb in "bgGxX":
        prec = -1
    elif verb in "fFeE":
        prec = 6
    else:
        return _bad_verb(verb, value, model)
    if spec.prec is not None:
        prec = spec.prec
    num = _strconv_float(value, "f" if verb == "F" else verb, prec, spec.sharp)
    if num[0] not in "+-":
        num = "+" + num
    if spec.space and num[0] == "+" and not spec.plus:
        num = " " + num[1:]
    if num[1:] in ("Inf", "NaN"):  # not numbers, so never zero-padded; NaN shows a sign only when asked
        if num[1] == "N" and not spec.space and not spec.plus:
            num = num[1:]
        return _pad(num, spec, zero=False)
    if spec.plus or num[0] != "+":
        if spec.zero and not spec.minus and spec.width is not None and spec.width > len(num):
            return num[0] + "0" * (spec.width - len(num)) + num[1:]
        return _pad(num, spec)
    return _pad(num[1:], spec)


def _strconv_float(value: float, verb: str, prec: int, sharp: bool) -> str:
    """strconv.FormatFloat's text (with "+Inf"/"-Inf"/"NaN"), with the # flag's alternate form."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if verb in "xX":
        return _hex_float(value, prec, upper=verb == "X")
    if verb == "b":
        bits = struct.unpack(">Q", struct.pack(">d", value))[0]
        exp_bits, mantissa = (bits >> 52) & 0x7FF, bits & ((1 << 52) - 1)
        exp = -1074 if exp_bits == 0 else exp_bits - 1075
        if exp_bits:
            mantissa |= 1 << 52
        return f"{'-' if bits >> 63 else ''}{mantissa}p{exp:+d}"
    if prec < 0 and not sharp:  # shortest
        text = format_float(value)
        return text.upper() if verb == "G" else text
    if prec < 0:
        prec = 6  # %#g: six significant digits, trailing zeros kept
    return f"%{'#' if sharp else ''}.{prec}{verb}" % value


def _hex_float(value: float, prec: int, upper: bool) -> str:
    """strconv's 'x' format: -0x1.8p+01 (shortest, or rounded to `prec` hex digits)."""
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    value = abs(value)
    if value == 0:
        lead, frac, exp = 0, 0, 0
    else:
        mantissa, exp2 = math.frexp(value)  # value = mantissa * 2**exp2, 0.5 <= mantissa < 1
        full, exp = int(mantissa * (1 << 53)), exp2 - 1  # 1.fff (52 fraction bits) * 2**exp
        lead, frac = 1, full & ((1 << 52) - 1)
    if 0 <= prec < 13:
        shift = (13 - prec) * 4
        rounded, rest = divmod((lead << 52) | frac, 1 << shift)
        half = 1 << (shift - 1)
        if rest > half or (rest == half and rounded & 1):
            rounded += 1
        if rounded >> (prec * 4) >= 2:  # rounding carried into the leading digit
            rounded >>= 1
            exp += 1
        lead, digits = (
            rounded >> (prec * 4),
            (f"{rounded & ((1 << (prec * 4)) - 1):0{prec}x}" if prec else ""),
        )
    else:
        digits = f"{frac:013x}"
        digits = digits.rstrip("0") if prec < 0 else digits.ljust(prec, "0")
    text = f"{sign}0x{lead}{'.' + digits if digits else ''}p{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return text.upper() if upper else text


# Printf ----------------------------------------------------------------------------
def _parse_num(fmt: str, i: int) -> tuple[int | None, int]:
    """fmt's parsenum: a decimal number at fmt[i:], or None (Go ignores absurdly large numbers; past
    MAX_STRING, which no output could hold, it is an error)."""
    j = i
    while j < len(fmt) and fmt[j].isdigit() and fmt[j].isascii():
        j += 1
    if j == i:
        return None, j
    if j - i > 6:
        if int(fmt[i:j]) > MAX_STRING:
            raise CallError(f"width or precision exceeds {MAX_STRING}")
        return None, j
    return int(fmt[i:j]), j


def _int_arg(args: Sequence[object], index: int) -> tuple[int | None, int]:
    """fmt's intFromArg: the argument for a `*` width or precision."""
    if index >= len(args):
        return None, index
    arg = args[index]
    if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) <= 1_000_000:
        return arg, index + 1
    return None, index + 1


_FLAGS = {"#": "sharp", "0": "zero", "+": "plus", "-": "minus", " ": "space"}


class _Printf:
    """fmt.Sprintf's directive loop (doPrintf), with explicit argument indexes ([n])."""

    def __init__(self, fmt: str, args: Sequence[object], model: Model) -> None:
        self.fmt, self.args, self.model = fmt, args, model
        self.argn = 0
        self.reordered = False
        self.good_index = True
        self.out: list[str] = []
        self.size = 0

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_STRING:
            raise CallError(f"result exceeds {MAX_STRING} characters")
        self.out.append(text)

    def arg_number(self, i: int) -> tuple[int, bool]:
        """An explicit `[n]` at fmt[i:]: the position after it and whether there was one."""
        fmt = self.fmt
        if i >= len(fmt) or fmt[i] != "[":
            return i, False
        self.reordered = True
        close = fmt.find("]", i + 1)
        if close < 0:
            self.good_index = False
            return i + 1, False
        number, end = _parse_num(fmt, i + 1)
        if number is None or end != close or not 1 <= number <= len(self.args):
            self.good_index = False
            return close + 1, number is not None and end == close
        self.argn = number - 1
        return close + 1, True

    def directive(self, i: int) -> int:
        """Format the directive after the `%` at fmt[i-1]; returns where the text resumes."""
        fmt, spec = self.fmt, _Spec()
        n = len(fmt)
        self.good_index = True
        while i < n and fmt[i] in _FLAGS:
            setattr(spec, _FLAGS[fmt[i]], True)
            i += 1
        i, after_index = self.arg_number(i)
        if i < n and fmt[i] == "*":
            spec.width, self.argn = _int_arg(self.args, self.argn)
            if spec.width is None:
                self.emit("%!(BADWIDTH)")
            elif spec.width < 0:
                spec.width, spec.minus = -spec.width, True
            i, after_index = i + 1, False
        else:
            spec.width, i = _parse_num(fmt, i)
            if after_index and spec.width is not None:
                self.good_index = False
        if i + 1 < n and fmt[i] == ".":
            if after_index:
                self.good_index = False
            i, after_index = self.arg_number(i + 1)
            if i < n and fmt[i] == "*":
                spec.prec, self.argn = _int_arg(self.args, self.argn)
                if spec.prec is not None and spec.prec < 0:
                    spec.prec = None
                if spec.prec is None:
                    self.emit("%!(BADPREC)")
                i, after_index = i + 1, False
            else:
                prec, i = _parse_num(fmt, i)
                spec.prec = prec or 0
        if not after_index:
            i, after_index = self.arg_number(i)
        if i >= n:
            self.emit("%!(NOVERB)")
            return i
        verb = fmt[i]
        if verb == "%":
            self.emit("%")
        elif not self.good_index:
            self.emit(f"%!{verb}(BADINDEX)")
        elif self.argn >= len(self.args):
            self.emit(f"%!{verb}(MISSING)")
        else:
            if verb == "v":  # %+v and %#v are field names and Go syntax, not sign and alternate form
                spec.sharp_v, spec.sharp, spec.plus_v, spec.plus = spec.sharp, False, spec.plus, False
            self.emit(_fmt_arg(self.args[self.argn], verb, spec, self.model))
            self.argn += 1
        return i + 1

    def run(self) -> str:
        fmt, i, n = self.fmt, 0, len(self.fmt)
        while i < n:
            j = fmt.find("%", i)
            if j < 0:
                self.emit(fmt[i:])
                break
            self.emit(fmt[i:j])
            i = self.directive(j + 1)
        if not self.reordered and self.argn < len(self.args):
            extra = ", ".join(
                "<nil>" if a is None else f"{self.model.type_name(a)}={format_value(a, self.model)}"
                for a in self.args[self.argn :]
            )
            self.emit(f"%!(EXTRA {extra})")
        return "".join(self.out)


_BASIC_MODEL = Model()


def format_float_verb(value: float, verb: str, prec: int | None = None) -> str:
    """fmt's %<verb> of a float64, with a precision if given: ("g", 4) is %.4g."""
    return _fmt_float(value, verb, _Spec(prec=prec), _BASIC_MODEL)
