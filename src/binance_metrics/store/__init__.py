"""ClickHouse: client, schema, the dataflow sink and queries."""
