"""Binance's public kline archive (binance-public-data): file layout and the checksum sidecar."""

MONTHLY = "monthly"
DAILY = "daily"
# <base>/data/spot/<monthly|daily>/klines/<PAIR>/<interval>/<PAIR>-<interval>-<YYYY-MM[-DD]>.zip
PATH = "/data/spot/{kind}/klines/{pair}/{interval}/{pair}-{interval}-{period}.zip"
CHECKSUM_SUFFIX = ".CHECKSUM"  # "<sha256>  <file>.zip"
MAX_ATTEMPTS = 2  # a checksum mismatch is fetched once more, then the file fails
