"""The `streamrnn` command: subcommands map to their modules here, at the edge."""

from __future__ import annotations

import sys

COMMANDS = {
    "serve": (".serve", "run the daemon on stdin, files and sockets"),
    "replay": (".replay", "run a CSV or JSON-lines file through the same worker, offline"),
    "produce": (".produce", "append JSON lines from stdin to partitioned Redis Streams"),
    "inspect": (".inspect", "each Redis Streams partition's owner, checkpoint, lag, keys and digest"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        lines = "\n".join(f"  {name:<8}{doc}" for name, (_, doc) in COMMANDS.items())
        print(f"usage: streamrnn {{{','.join(COMMANDS)}}} [options]\n\n{lines}", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]][0], __package__).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
