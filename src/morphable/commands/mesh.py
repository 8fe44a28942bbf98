"""`morphable mesh` (being written)."""


def register(subparsers) -> None:
    subparsers.add_parser("mesh", help="(being written)")
