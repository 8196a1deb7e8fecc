"""dlt sources, one package per API, in the dlt verified-sources shape."""
