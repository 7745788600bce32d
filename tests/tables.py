"""Reading back the tables and figures `experiments.analysis` writes."""


def markdown_rows(markdown: str) -> list[dict[str, str]]:
    """The rows of the first pipe table in `markdown`, as {column: cell text}."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    header, body = split[0], split[2:]  # split[1] is the |:---| rule
    return [dict(zip(header, cells, strict=True)) for cells in body]


def suptitle(fig) -> str:
    """A matplotlib figure's title, line breaks as spaces (long titles are wrapped)."""
    return " ".join(fig.get_suptitle().split())


def legend(ax) -> list[str]:
    """The texts of a matplotlib axis's legend."""
    return [t.get_text() for t in ax.get_legend().get_texts()]
