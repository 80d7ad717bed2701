"""What an uploaded file is, by its first bytes (never by what the uploader claims). Pure functions.

Accepted: JPEG, PNG and WebP photos; OGG/Opus and M4A (AAC in MP4) voice notes.
"""

from __future__ import annotations

#: MP4 brands of audio files (ISO/IEC 14496-12 `ftyp`): Apple's M4A and the generic ones phones write.
_AUDIO_BRANDS = (b"M4A ", b"M4B ", b"mp42", b"isom", b"mp41", b"dash")


def sniff(data: bytes) -> str | None:
    """The content type of an accepted file, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"OggS") and b"OpusHead" in data[:128]:
        return "audio/ogg"
    if data[4:8] == b"ftyp" and data[8:12] in _AUDIO_BRANDS:
        return "audio/mp4"
    return None


EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "audio/ogg": ".ogg",
              "audio/mp4": ".m4a"}
