-- reshard_hash_shard against the vectors PostgreSQL 15 itself computed (pgdog-facts.md).
SELECT k, reshard_hash_shard(k, 2) AS n2, reshard_hash_shard(k, 3) AS n3,
       reshard_hash_shard(k, 4) AS n4, reshard_hash_shard(k, 8) AS n8
FROM unnest(ARRAY[0, 1, 3, 42, -1, 1000000]::bigint[]) AS k;
SELECT k, reshard_hash_shard(k, 2) AS n2, reshard_hash_shard(k, 3) AS n3,
       reshard_hash_shard(k, 4) AS n4, reshard_hash_shard(k, 8) AS n8
FROM unnest(ARRAY['', 'apples', 'abcdefghijklm']::text[]) AS k;
SELECT k, reshard_hash_shard(k, 2) AS n2, reshard_hash_shard(k, 3) AS n3,
       reshard_hash_shard(k, 4) AS n4, reshard_hash_shard(k, 8) AS n8
FROM unnest(ARRAY['00000000-0000-0000-0000-000000000000',
                  '550e8400-e29b-41d4-a716-446655440000']::uuid[]) AS k;
-- int2/int4 hash like the same bigint; varchar like text.
SELECT count(*) AS mismatches FROM generate_series(-50000, 50000, 7) AS g
WHERE reshard_hash_shard(g::int4, 5) <> reshard_hash_shard(g::int8, 5)
   OR reshard_hash_shard((g % 30000)::int2, 5) <> reshard_hash_shard((g % 30000)::int8, 5);
SELECT reshard_hash_shard('apples'::varchar, 8) AS varchar_apples;
-- NULL in, NULL out (a NULL key is refused by pre-flight before any copy).
SELECT reshard_hash_shard(NULL::bigint, 4) IS NULL AS null_key;
-- A shard count below one is a clear error.
SELECT reshard_hash_shard(1::bigint, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_hash_shard('x'::text, -3);
\echo :LAST_ERROR_SQLSTATE
