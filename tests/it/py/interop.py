"""Python side of ferry's interop test (tests/it/interop.rs): pyarrow and DuckDB read the Parquet
files ferry publishes, and pyarrow writes the Parquet sources ferry publishes.

Every command prints one JSON document on stdout; the Rust test compares it with what it knows.
Values are made JSON-comparable the same way on both sides: dates as days since 1970-01-01,
timestamps as epoch milliseconds, decimals as their text, nulls as null.

    python3 interop.py check-modules
    python3 interop.py read FILE...        # pyarrow metadata + data checks, DuckDB queries
    python3 interop.py dump FILE...        # rows of the files in order, as JSON lists
    python3 interop.py write-sources DIR   # flat.parquet + nested.parquet; prints expected rows
"""

import datetime
import decimal
import json
import random
import sys


def check_modules():
    import duckdb
    import pyarrow

    return {"pyarrow": pyarrow.__version__, "duckdb": duckdb.__version__}


def plain(value):
    """A Python value from `to_pylist()` as JSON (see the module doc)."""
    if isinstance(value, datetime.datetime):
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return (value - epoch) // datetime.timedelta(milliseconds=1)
    if isinstance(value, datetime.date):
        return (value - datetime.date(1970, 1, 1)).days
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def rows_of(table):
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [[plain(c[r]) for c in columns] for r in range(table.num_rows)]


def file_metadata(path):
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    chunks = [meta.row_group(g).column(c) for g in range(meta.num_row_groups) for c in range(meta.num_columns)]
    sorting = meta.row_group(0).sorting_columns if meta.num_row_groups else ()
    return {
        "rows": meta.num_rows,
        "row_groups": meta.num_row_groups,
        "created_by": meta.created_by,
        "statistics_in_every_chunk": all(ch.is_stats_set and ch.statistics.has_min_max for ch in chunks),
        "null_counts_in_every_chunk": all(ch.is_stats_set and ch.statistics.has_null_count for ch in chunks),
        "column_index_in_every_chunk": all(ch.has_column_index for ch in chunks),
        "offset_index_in_every_chunk": all(ch.has_offset_index for ch in chunks),
        "compression": sorted({ch.compression for ch in chunks}),
        "sorting_columns": [[s.column_index, s.descending, s.nulls_first] for s in sorting or ()],
    }


def read(paths):
    """What pyarrow and DuckDB see in ferry's published vehicle registry files."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [file_metadata(p) for p in paths]
    table = pa.concat_tables([pq.read_table(p) for p in paths])
    vins = table.column("vin").to_pylist()
    first = table.slice(0, 1).to_pylist()[0]
    schema = [[f.name, str(f.type), f.nullable] for f in table.schema]
    plate_prefix = first["plate"][:2]

    con = duckdb.connect()
    count, min_vin, max_vin = con.execute(
        "SELECT count(*), min(vin), max(vin) FROM read_parquet(?)", [list(paths)]
    ).fetchone()
    (prefix_count,) = con.execute(
        "SELECT count(*) FROM read_parquet(?) WHERE starts_with(plate, ?)", [list(paths), plate_prefix]
    ).fetchone()
    (updated_type,) = con.execute(
        "SELECT typeof(updated_at) FROM read_parquet(?) LIMIT 1", [list(paths)]
    ).fetchone()
    (first_epoch_ms,) = con.execute(
        "SELECT epoch_ms(updated_at) FROM read_parquet(?) ORDER BY vin LIMIT 1", [list(paths)]
    ).fetchone()
    return {
        "pyarrow": {
            "files": files,
            "rows": table.num_rows,
            "schema": schema,
            "strictly_increasing_vin": all(a < b for a, b in zip(vins, vins[1:])),
            "first_vin": vins[0],
            "first_plate": first["plate"],
            "first_owner_name": first["owner_name"],
            "first_status": first["status"],
            "first_updated_at_ms": plain(first["updated_at"]),
            "updated_at_tz": str(table.schema.field("updated_at").type.tz),
        },
        "duckdb": {
            "count": count,
            "min_vin": min_vin,
            "max_vin": max_vin,
            "plate_prefix": plate_prefix,
            "plate_prefix_count": prefix_count,
            "updated_at_type": updated_type,
            "first_updated_at_ms": first_epoch_ms,
        },
    }


def dump(paths):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(p) for p in paths])
    return {"columns": table.schema.names, "rows": rows_of(table)}


REGIONS = ["京", "沪", "粤", "川", "浙", "苏", "鲁", "豫"]
NAMES = ["人民路站", "解放路站", "中山路站", "建设路站", "和平路站", "新华路站", "胜利路站"]
ROWS = 3000
ROW_GROUP_ROWS = 400


def source_table(rng, nested):
    import pyarrow as pa

    def maybe(value, null_share=0.15):
        return None if rng.random() < null_share else value

    keys = [(region, seq) for region in REGIONS for seq in range(ROWS // len(REGIONS))]
    rng.shuffle(keys)
    tz = "+08:00"
    base = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=8)))
    data = {
        "region": pa.array([k[0] for k in keys], pa.string()).dictionary_encode(),
        "seq": pa.array([k[1] for k in keys], pa.int64()),
        "name": pa.array([maybe(rng.choice(NAMES)) for _ in keys], pa.string()).dictionary_encode(),
        "capacity": pa.array([maybe(rng.randrange(10, 5000)) for _ in keys], pa.int32()),
        "score": pa.array([maybe(rng.randrange(-400, 400) / 4) for _ in keys], pa.float64()),
        "active": pa.array([maybe(rng.random() < 0.7) for _ in keys], pa.bool_()),
        "amount": pa.array(
            [maybe(decimal.Decimal(rng.randrange(-10**9, 10**9)).scaleb(-2)) for _ in keys],
            pa.decimal128(12, 2),
        ),
        "opened_on": pa.array(
            [maybe(datetime.date(2000, 1, 1) + datetime.timedelta(days=rng.randrange(9000))) for _ in keys],
            pa.date32(),
        ),
        "seen_at": pa.array(
            [maybe(base + datetime.timedelta(milliseconds=rng.randrange(10**10))) for _ in keys],
            pa.timestamp("ms", tz=tz),
        ),
    }
    if nested:
        contact = pa.struct([pa.field("phone", pa.string(), nullable=True), pa.field("ext", pa.int32())])
        data["contact"] = pa.array(
            [maybe({"phone": maybe("0755-8888"), "ext": maybe(rng.randrange(100))}) for _ in keys], contact
        )
        data["tags"] = pa.array([maybe([maybe("站"), maybe("枢纽")]) for _ in keys], pa.list_(pa.string()))
    return pa.table(data)


def write_sources(out_dir):
    """flat.parquet: dictionary-encoded and nullable columns in several row groups, not sorted;
    nested.parquet: the same plus a nullable struct with nullable children and a list column."""
    import os

    import pyarrow.parquet as pq

    result = {}
    for name, nested in [("flat", False), ("nested", True)]:
        table = source_table(random.Random(20250101), nested)
        path = os.path.join(out_dir, f"{name}.parquet")
        pq.write_table(
            table,
            path,
            row_group_size=ROW_GROUP_ROWS,
            data_page_size=4096,
            use_dictionary=True,
        )  # pyarrow's default compression: snappy
        meta = pq.ParquetFile(path).metadata
        names = table.schema.names
        dictionary_columns = sorted(
            {
                meta.row_group(0).column(c).path_in_schema
                for c in range(meta.num_columns)
                if meta.row_group(0).column(c).has_dictionary_page
            }
        )
        # ferry orders strings by UTF-8 bytes, which is Python's code point order.
        rows_by_key = sorted(rows_of(table), key=lambda row: (row[0], row[1]))
        result[name] = {
            "path": path,
            "row_groups": meta.num_row_groups,
            "compression": sorted({meta.row_group(0).column(c).compression for c in range(meta.num_columns)}),
            "dictionary_columns": dictionary_columns,
            "max_definition_levels": {
                meta.schema.column(c).path: meta.schema.column(c).max_definition_level
                for c in range(meta.num_columns)
            },
            "columns": names,
            "null_counts": {n: table.column(n).null_count for n in names},
            "rows_by_key": None if nested else rows_by_key,
        }
    return result


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "check-modules":
        out = check_modules()
    elif command == "read":
        out = read(args)
    elif command == "dump":
        out = dump(args)
    elif command == "write-sources":
        out = write_sources(args[0])
    else:
        raise SystemExit(f"unknown command {command}")
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv)
