-- 100,000 random values of each type get from reshard_hash_shard exactly the shard that PostgreSQL's
-- own partition router accepts (satisfies_hash_partition), for N in 1, 2, 3, 4, 7, 8, 16.
CREATE TABLE hp_bigint (k bigint) PARTITION BY HASH (k);
CREATE TABLE hp_text (k text) PARTITION BY HASH (k);
CREATE TABLE hp_varchar (k varchar) PARTITION BY HASH (k);
CREATE TABLE hp_uuid (k uuid) PARTITION BY HASH (k);
CREATE TEMP TABLE moduli AS SELECT unnest(ARRAY[1, 2, 3, 4, 7, 8, 16]) AS n;

SELECT setseed(0.4242);
-- bigint: the extremes, small values, int4-range values and the full 64-bit range of both signs.
CREATE TEMP TABLE v_bigint AS
SELECT unnest(ARRAY[-9223372036854775808, 9223372036854775807, 0, -1, 1,
                    -2147483648, 2147483647, 4294967296, -4294967296]::bigint[]) AS k
UNION ALL
SELECT CASE i % 4
         WHEN 0 THEN (random() * 2000 - 1000)::bigint
         WHEN 1 THEN (random() * 4294967295 - 2147483648)::bigint
         WHEN 2 THEN ((random() * 2 - 1) * 9.2e18)::bigint
         ELSE (random() * 9.2e18)::bigint * -1
       END
FROM generate_series(1, 99991) AS i;
-- text: empty, ASCII, multibyte (2-, 3- and 4-byte UTF-8) and long strings (some TOASTed).
CREATE TEMP TABLE v_text AS
SELECT '' AS k
UNION ALL
SELECT CASE i % 5
         WHEN 0 THEN md5(random()::text)
         WHEN 1 THEN substr(md5(random()::text), 1, (random() * 8)::int)
         WHEN 2 THEN repeat(chr(192 + (random() * 300)::int), 1 + (random() * 5)::int)
                     || chr(19968 + (random() * 2000)::int) || chr(128512 + (random() * 70)::int)
         WHEN 3 THEN repeat(md5(random()::text), 1 + (random() * 40)::int)
         ELSE repeat(md5(random()::text) || 'é', CASE WHEN i % 1000 = 4 THEN 4000 ELSE 3 END)
       END
FROM generate_series(1, 99999) AS i;
CREATE TEMP TABLE v_uuid AS
SELECT md5(random()::text || i)::uuid AS k FROM generate_series(1, 99998) AS i
UNION ALL SELECT '00000000-0000-0000-0000-000000000000'::uuid
UNION ALL SELECT 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid;

SELECT 'bigint' AS type, (SELECT count(*) FROM v_bigint) AS values_tested;
SELECT 'text' AS type, (SELECT count(*) FROM v_text) AS values_tested,
       (SELECT count(*) FROM v_text WHERE octet_length(k) > 100000) AS over_100kb,
       (SELECT count(*) FROM v_text WHERE octet_length(k) > length(k)) AS multibyte;
SELECT 'uuid' AS type, (SELECT count(*) FROM v_uuid) AS values_tested;

-- mismatches must be 0; shards_used = n shows the test is not trivially true.
SELECT 'bigint' AS type, n,
       count(*) FILTER (WHERE NOT satisfies_hash_partition('hp_bigint'::regclass, n, reshard_hash_shard(k, n), k)) AS mismatches,
       count(DISTINCT reshard_hash_shard(k, n)) AS shards_used
FROM v_bigint, moduli GROUP BY n ORDER BY n;
SELECT 'text' AS type, n,
       count(*) FILTER (WHERE NOT satisfies_hash_partition('hp_text'::regclass, n, reshard_hash_shard(k, n), k)) AS mismatches,
       count(DISTINCT reshard_hash_shard(k, n)) AS shards_used
FROM v_text, moduli GROUP BY n ORDER BY n;
SELECT 'varchar' AS type, n,
       count(*) FILTER (WHERE NOT satisfies_hash_partition('hp_varchar'::regclass, n, reshard_hash_shard(k::varchar, n), k::varchar)) AS mismatches
FROM (SELECT k FROM v_text LIMIT 20000) AS v, moduli GROUP BY n ORDER BY n;
SELECT 'uuid' AS type, n,
       count(*) FILTER (WHERE NOT satisfies_hash_partition('hp_uuid'::regclass, n, reshard_hash_shard(k, n), k)) AS mismatches,
       count(DISTINCT reshard_hash_shard(k, n)) AS shards_used
FROM v_uuid, moduli GROUP BY n ORDER BY n;
-- int4 keys in an int4-partitioned table: same shard as reshard_hash_shard of the value.
CREATE TABLE hp_int4 (k int4) PARTITION BY HASH (k);
SELECT 'int4' AS type, n,
       count(*) FILTER (WHERE NOT satisfies_hash_partition('hp_int4'::regclass, n, reshard_hash_shard(k, n), k)) AS mismatches
FROM (SELECT k::int4 AS k FROM v_bigint WHERE k BETWEEN -2147483648 AND 2147483647) AS v, moduli
GROUP BY n ORDER BY n;
DROP TABLE hp_bigint, hp_text, hp_varchar, hp_uuid, hp_int4;
