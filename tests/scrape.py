"""/metrics read as Prometheus reads it: by prometheus_client's own parser."""

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """The families and samples of one /metrics answer."""

    def __init__(self, text: str):
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def __call__(self, sample: str, **labels: str) -> float:
        """The value of ``sample`` (a full sample name, e.g. ``offload_effects_finished_total``)
        with these labels; 0 when it has none yet, as Prometheus treats a missing series."""
        for family in self.families.values():
            for name, sample_labels, value, *_ in family.samples:
                if name == sample and sample_labels == labels:
                    return value
        return 0.0
