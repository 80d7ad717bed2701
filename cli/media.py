"""fieldgate media show."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.common import ConfigOpt, DataDirOpt, VerboseOpt, errors, read_store, settings
from gateway.errors import StoreError
from gateway.store.media import MediaFiles

app = typer.Typer(help="Photos and voice notes uploaded for orders.", no_args_is_help=True)


@app.command("show")
def show_cmd(
    media_id: Annotated[str, typer.Argument(help="the media_id of the upload's ack (or of `orders show`)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the file; - for standard output")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write an uploaded photo or voice note to a file, and say what it is.

    Example:

        fieldgate media show 9f1c0a… --out proof.jpg
    """
    s = settings(config, data_dir, verbose)
    row = read_store(s).media(media_id)
    if row is None:
        raise StoreError(f"no media {media_id!r}",
                         hint="Its id is in the uploader's ack and in `fieldgate orders show`.")
    try:
        data = MediaFiles(s.data_dir).read(row["sha256"])
    except FileNotFoundError:
        raise StoreError(f"the file of media {media_id} is gone (purged with its order's personal data?)") from None
    if str(out) == "-":
        sys.stdout.buffer.write(data)
    else:
        out.write_bytes(data)
    errors.print(f"{row['content_type']}, {row['size']:,} bytes, {row['kind']} of order {row['order_id']} "
                 f"by {row['role']} {row['uploader_id']} at {row['created_at']}" + ("" if str(out) == "-" else
                                                                                  f" → {out}"))
