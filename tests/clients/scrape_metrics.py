"""Parses a Prometheus text exposition with the Prometheus project's own Python
parser (prometheus_client) and evaluates the Grafana dashboard's selectors against it.

Usage: scrape_metrics.py METRICS_FILE DASHBOARD_JSON

Prints one JSON object:
  families: {name: type}          (the family name as written in `# TYPE`)
  samples:  [{name, labels, value}]
  selectors: [{panel, selector, series}]  every metric selector of every panel target
             and template variable, with `$model`-style variables taken as `.*`
             (their "All" value), and how many samples it matches.
Fails (exit 1) when the text does not parse.
"""

import json
import re
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from check_deploy import promql_metrics  # noqa: E402  (the dashboard checker's PromQL reader)

MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:\\.|[^"\\])*)"')


def families_and_samples(text: str):
    """Families and samples as Prometheus stores them. prometheus_client follows
    OpenMetrics and reports a counter `x` as family `x` with samples `x_total`; the
    series Prometheus scrapes from the text format keep the name the text wrote."""
    typed = {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            typed[m.group(1)] = m.group(2)
    families, samples = {}, []
    for fam in text_string_to_metric_families(text):
        written = fam.name if fam.name in typed else fam.name + "_total"
        families[written] = typed[written]
        for s in fam.samples:
            name = s.name
            if fam.type == "counter" and not written.endswith("_total") and name == written + "_total":
                name = written
            samples.append({"name": name, "labels": dict(s.labels), "value": s.value})
    return families, samples


def selectors(expr: str):
    """(metric name, [(label, op, value)]) for every selector of a PromQL expression."""
    names = promql_metrics(expr)
    expr = re.sub(r"\$\{?\w+\}?", ".*", expr)  # Grafana variables: their "All" value
    out = []
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?", expr):
        if m.group(1) in names:
            out.append((m.group(1), MATCHER.findall(m.group(2) or "")))
    return out


def matches(sample, name, matchers):
    if sample["name"] != name:
        return False
    for label, op, value in matchers:
        got = sample["labels"].get(label, "")
        ok = {
            "=": got == value,
            "!=": got != value,
            "=~": re.fullmatch(value, got) is not None,
            "!~": re.fullmatch(value, got) is None,
        }[op]
        if not ok:
            return False
    return True


def dashboard_expressions(dash):
    exprs = []
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if v.get("type") == "query":
            exprs.append(("variable " + v["name"], q.get("query") if isinstance(q, dict) else q))
    stack = list(dash.get("panels", []))
    while stack:
        p = stack.pop(0)
        stack.extend(p.get("panels", []))
        exprs += [(p["title"], t["expr"]) for t in p.get("targets", []) if t.get("expr")]
    return exprs


def main():
    text = Path(sys.argv[1]).read_text()
    dash = json.loads(Path(sys.argv[2]).read_text())
    families, samples = families_and_samples(text)
    found = []
    for where, expr in dashboard_expressions(dash):
        for name, matchers in selectors(expr):
            n = sum(1 for s in samples if matches(s, name, matchers))
            found.append({"panel": where, "selector": f"{name}{matchers}", "series": n})
    json.dump({"families": families, "samples": samples, "selectors": found}, sys.stdout)


if __name__ == "__main__":
    main()
