"""How the channel benchmark reports: cost split, verdicts, the retry cycle, the table."""

from __future__ import annotations

from bench.channels_kit import EMAIL_RATE, EMAIL_RATIO, PUSH_RATIO, Figure


class Report:
    """Mixed into Bench: printing only, no measuring."""

    @staticmethod
    def cost_model(figures: dict[str, Figure], alone: dict[str, float]) -> None:
        """CPU per message in this process: render and send as timed in place, the rest
        (state machine and database); then parts measured alone, for comparison."""
        whole, parts = figures["in"].cpu_ms, figures["in"].parts
        rest = whole - parts["render"] - parts["send"]
        print(
            f"  where the CPU goes, ms per message in this process ({whole:.2f} in all), "
            f"timed in place:\n"
            f"    {parts['render']:6.3f}  render\n"
            f"    {parts['send']:6.3f}  send\n"
            f"    {rest:6.3f}  the rest: claim, load, record (state machine + database)\n"
            f"  measured alone (each part runs faster alone than interleaved):"
        )
        alone = {"deliver step, no render, no send": figures["no-send"].cpu_ms, **alone}
        for name, value in alone.items():
            print(f"    {value:6.3f}  {name}")

    # -- printing ---------------------------------------------------------------------------
    @staticmethod
    def met(figure: Figure, base: Figure | None, ratio: float | None, rate: float | None):
        if base is None or ratio is None:
            return None
        return figure.rate >= ratio * base.rate and (rate is None or figure.rate >= rate)

    @staticmethod
    def verdict(figure: Figure, base: Figure, ratio: float, rate: float | None) -> str:
        """'>= 0.6 x: NOT MET (0.21 x, 2.9 x short); >= 200/s: met' and the like."""
        got = figure.rate / base.rate
        parts = [
            f">= {ratio} x: met"
            if got >= ratio
            else f">= {ratio} x: NOT MET ({got:.2f} x, {ratio / got:.1f} x short)"
        ]
        if rate is not None:
            parts.append(
                f">= {rate:.0f}/s: met"
                if figure.rate >= rate
                else f">= {rate:.0f}/s: NOT MET ({rate - figure.rate:,.0f}/s short)"
            )
        return "; ".join(parts)

    def report(
        self,
        figure: Figure,
        base: Figure | None = None,
        ratio: float | None = None,
        rate: float | None = None,
    ) -> None:
        line = f"\n{figure.label}: {figure.count:,} in {figure.seconds:.2f} s"
        line += f" = {figure.rate:,.0f}/s"
        if figure.cpu_ms is not None:
            line += f", {figure.cpu_ms:.2f} ms CPU each"
        if base is not None:
            line += f", {figure.rate / base.rate:.2f} x {base.label.split(': ', 1)[1]}"
        print(line)
        if ratio is not None:
            print(f"  target {self.verdict(figure, base, ratio, rate)}")
        print(f"  CPU, % of one core (2 cores = 200%): {figure.cpu}")

    def report_retry(self, ok: Figure, retry: Figure, warm: int) -> None:
        n = retry.count
        print(
            f"\n{retry.label}: {n:,} deliveries, {retry.deferred:,} first attempts deferred "
            f"(451), all sent in {retry.seconds:.2f} s = {retry.rate:,.0f}/s "
            f"(first-time success: {ok.seconds:.2f} s = {ok.rate:,.0f}/s)"
        )
        print(f"  CPU, % of one core (2 cores = 200%): {retry.cpu}")
        for name in ("worker", "postgres", "redis", "smtp peer"):
            extra = (retry.cpu_s[name] - ok.cpu_s[name]) / n * 1000
            print(
                f"  {name} CPU: {retry.cpu_s[name] / n * 1000:.2f} ms per delivery with a "
                f"retry, {ok.cpu_s[name] / n * 1000:.2f} ms without: +{extra:.2f} ms per retry"
            )
        print(f"  database work per delivery ({warm} warm-up deliveries in both taken out):")
        for key in ok.db:
            first = ok.db[key] / (n + warm)
            with_retry = (retry.db[key] - warm * first) / n
            print(
                f"    {key}: {with_retry:,.2f} with a retry, {first:,.2f} without "
                f"(+{with_retry - first:,.2f})"
            )

    def table(self, email: dict[str, Figure], push: dict[str, Figure]) -> None:
        rows = []
        if email:
            rows += [
                (email["baseline"], None, None, None),
                (email["in"], email["baseline"], EMAIL_RATIO, EMAIL_RATE),
                (email["no-send"], email["baseline"], None, None),
                (email["worker"], email["baseline"], EMAIL_RATIO, EMAIL_RATE),
                (email["retry"], email["baseline"], None, None),
            ]
        if push:
            rows += [
                (push["baseline"], None, None, None),
                (push["raw-post"], push["baseline"], None, None),
                (push["floor"], push["baseline"], None, None),
                (push["in"], push["baseline"], PUSH_RATIO, None),
                (push["no-send"], push["baseline"], None, None),
                (push["worker"], push["baseline"], PUSH_RATIO, None),
            ]
        print("\n| figure | per second | CPU ms per message | ratio to baseline | target |")
        print("| --- | --- | --- | --- | --- |")
        for figure, base, ratio, rate in rows:
            shown = f"{figure.rate / base.rate:.2f} x" if base else "(baseline)"
            target = ""
            if ratio is not None:
                target = self.verdict(figure, base, ratio, rate)
            cpu = f"{figure.cpu_ms:.2f}" if figure.cpu_ms is not None else ""
            print(f"| {figure.label} | {figure.rate:,.0f} | {cpu} | {shown} | {target} |")
        if push:
            floor = push["floor"]
            print(
                f"\npush against the floor (encrypt + POST through http.client, "
                f"{floor.rate:,.0f}/s): "
                f"deliver step in-process {push['in'].rate / floor.rate:.2f} x, "
                f"worker {push['worker'].rate / floor.rate:.2f} x"
            )
        if email:
            ok, retry = email["worker"], email["retry"]
            n = retry.count
            extra = (retry.cpu_s["worker"] - ok.cpu_s["worker"]) / n * 1000
            print(
                f"\nretry cycle: +{extra:.2f} ms of worker CPU per retry "
                f"({ok.cpu_s['worker'] / n * 1000:.2f} ms per delivery sent first time), "
                f"+{(retry.seconds - ok.seconds) / n * 1000:.2f} ms of wall time per delivery"
            )
        print(
            "\nCPU ms per message: the client process for the raw baselines, this process for "
            "the in-process rows, the whole worker (its parent and children) for worker rows"
        )
