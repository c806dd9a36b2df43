"""Incremental detokenization: token bytes, UTF-8 buffering and stop-string hold-back."""

from __future__ import annotations

import codecs
import ctypes

import llama_cpp as L


class TextStream:
    """Turns token pieces (bytes) into releasable text.

    * incomplete multibyte UTF-8 sequences are buffered until complete (invalid bytes -> U+FFFD);
    * any text that might be the start of a stop string is held back;
    * when a stop string appears, ``stopped`` becomes True and ``text`` is cut just before it.
    ``text`` is the full generated text so far, ``sent`` how many of its characters were released.
    """

    __slots__ = ("_dec", "_stops", "_maxlen", "text", "sent", "stopped", "stopping_word")

    def __init__(self, stops: list[str] | tuple[str, ...] = ()):
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")
        self._stops = [s for s in stops if s]
        self._maxlen = max((len(s) for s in self._stops), default=0)
        self.text = ""
        self.sent = 0
        self.stopped = False
        self.stopping_word = ""  # the stop string that ended the text (llama-server's name)

    def push(self, piece: bytes) -> str:
        new = self._dec.decode(piece)
        if not new:
            return ""
        start = len(self.text)
        text = self.text = self.text + new
        if not self._stops:
            out = text[self.sent :]
            self.sent = len(text)
            return out
        lo = max(0, start - self._maxlen + 1)
        best, word = -1, ""
        for s in self._stops:
            p = text.find(s, lo)
            if p != -1 and (best == -1 or p < best):
                best, word = p, s
        if best != -1:
            self.text = text[:best]
            self.stopped, self.stopping_word = True, word
            out = text[self.sent : best] if best > self.sent else ""
            self.sent = len(self.text)
            return out
        hold = 0
        for s in self._stops:
            for k in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        end = len(text) - hold
        if end > self.sent:
            out = text[self.sent : end]
            self.sent = end
            return out
        return ""

    def flush(self) -> str:
        """Release everything still held (incomplete UTF-8 becomes U+FFFD)."""
        tail = self._dec.decode(b"", True)
        if tail:
            self.text += tail
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out


class Pieces:
    """Each token's bytes, looked up once per token id (the vocabulary does not change)."""

    def __init__(self, vocab: object) -> None:
        self._vocab = vocab
        self._known: dict[int, bytes] = {}
        self._buf = ctypes.create_string_buffer(256)

    def of(self, token: int) -> bytes:
        piece = self._known.get(token)
        if piece is None:
            n = L.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, False)
            if n < 0:
                self._buf = ctypes.create_string_buffer(-n + 16)
                n = L.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, False)
            piece = self._known[token] = self._buf.raw[:n]
        return piece
