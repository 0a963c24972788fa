"""Stop sequences over token pieces: text that could still become a stop sequence is held back,
a stop sequence split across pieces (or across a multi-byte character) is found, nothing after it is sent."""

from __future__ import annotations

from serving.generate.engine import Sampling, Sequence


def feed(stops: tuple[str, ...], pieces: list[bytes]) -> tuple[list[str], bool, str]:
    seq = Sequence([1], Sampling(stop=stops), lambda *_: None)
    sent = []
    for piece in pieces:
        text, stopped = seq.add_piece(piece)
        sent.append(text)
        if stopped:
            return sent, True, ""
    return sent, False, seq.flush()


def test_without_stops_every_piece_goes_out_at_once() -> None:
    assert feed((), [b"Hel", b"lo"]) == (["Hel", "lo"], False, "")


def test_a_stop_split_across_pieces_ends_before_it() -> None:
    sent, stopped, _ = feed(("world",), [b"Hello wor", b"ld and more"])
    assert stopped and "".join(sent) == "Hello "
    assert sent == ["Hello ", ""]  # "wor" was held back, then dropped with the stop


def test_held_back_text_that_is_not_a_stop_is_sent() -> None:
    sent, stopped, rest = feed(("world",), [b"Hello wor", b"m!"])
    assert not stopped and "".join(sent) + rest == "Hello worm!"
    assert sent == ["Hello ", "worm!"]


def test_the_earliest_of_several_stops_wins() -> None:
    sent, stopped, _ = feed(("b", "xa"), [b"1xab2"])
    assert stopped and sent == ["1"]


def test_a_character_split_across_pieces_is_decoded_whole() -> None:
    euro = "\u20ac".encode()
    sent, stopped, rest = feed((), [euro[:1], euro[1:], b"!"])
    assert "".join(sent) + rest == "\u20ac!" and sent[0] == ""
    sent, stopped, _ = feed(("\u20ac",), [b"a" + euro[:2], euro[2:] + b"b"])
    assert stopped and "".join(sent) == "a"
