"""Numbers as people read them."""


def human_size(n: float) -> str:
    """Bytes as B, KB, MB or GB (powers of 1024), one decimal above bytes."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
