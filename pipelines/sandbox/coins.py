"""The SYNTHETIC coin catalogue: which coins the sandbox knows and how each one's series behaves.

The table itself is data (coins.json beside this module, one coin per line, fields named as in `Coin`;
omitted fields take the defaults below), so adding or tuning a coin needs no code change. It is read once,
at import. Order matters: it is CoinGecko's image numbering and the order of SYMBOLS. POL and S are the
successors of migrated pairs (they trade only from their listing, see events.py); USDT, USDC and DAI are
stablecoins, on CoinGecko only.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Coin:
    """One synthetic coin: Binance base asset and CoinGecko identity, price level and supply."""

    base: str
    cg_id: str
    name: str
    anchor: float  # typical USD price the path wanders around
    sigma: float  # hourly log-return volatility
    circulating: float
    total: float | None
    max_supply: float | None
    lot_decimals: int  # base-volume step 10^-lot_decimals (Binance LOT_SIZE stepSize)
    usd_volume_h: float  # typical hourly quote volume
    ico_usd: float | None = None  # gives CoinGecko a non-null `roi`
    stable: bool = False  # stablecoins: CoinGecko only, not a Binance USDT base asset
    trade_usd: float = 250.0  # average trade size, for the trades count

    @property
    def symbol(self) -> str:
        return f"{self.base}USDT"

    @property
    def tick_units(self) -> int:
        """Price tick in 1e-8 units: about 1e-5 of the anchor, between 0.00000001 and 0.01."""
        exponent = math.floor(math.log10(self.anchor)) - 5 + 8
        return int(10 ** min(max(exponent, 0), 6))

    @property
    def lot_units(self) -> int:
        return int(10**self.lot_decimals)

    @property
    def circulating_supply(self) -> float:
        """The catalogue's round figure made irregular (up to 0.1% less), so market caps look real."""
        u = zlib.crc32(self.cg_id.encode()) / 2**32
        return round(self.circulating * (1 - 0.001 * u), 4)

    @property
    def total_supply(self) -> float | None:
        return self.circulating_supply if self.total == self.circulating else self.total


def _load_catalogue() -> tuple[Coin, ...]:
    """Every coin of coins.json, in file order (package data, so it ships inside the wheel)."""
    text = resources.files(__package__).joinpath("coins.json").read_text(encoding="utf-8")
    return tuple(Coin(**row) for row in json.loads(text))


COINS: tuple[Coin, ...] = _load_catalogue()
COIN_BY_SYMBOL: dict[str, Coin] = {c.symbol: c for c in COINS if not c.stable}
COIN_BY_ID: dict[str, Coin] = {c.cg_id: c for c in COINS}
SYMBOLS: list[str] = list(COIN_BY_SYMBOL)  # the Binance USDT pairs the sandbox serves klines for
