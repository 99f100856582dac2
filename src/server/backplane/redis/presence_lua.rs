//! The Lua scripts of presence in Redis (see [`presence`](super::presence) for the keys and why
//! each script is atomic). Each touches one hash-tagged slot: a room's hash, or a node's
//! liveness key with its room index.

/// KEYS: hash. ARGV: field prefix (`<node> <epoch> `, empty: write nothing), channel, payload
/// (empty: publish nothing), number of joins, then (session, entry) per join, then the leaves'
/// sessions.
pub(super) const CHANGE: &str = r#"
local p, n = ARGV[1], tonumber(ARGV[4])
local i = 5
if p ~= '' then
  for _ = 1, n do
    redis.call('HSET', KEYS[1], p .. ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  while i <= #ARGV do
    redis.call('HDEL', KEYS[1], p .. ARGV[i])
    i = i + 1
  end
end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return n
"#;

/// KEYS: hash. ARGV: node prefix (`<node> `), field prefix of the new epoch, then (session,
/// entry) per member: the node's fields of other epochs are replaced by these, atomically.
pub(super) const REGISTER: &str = r#"
local node, p = ARGV[1], ARGV[2]
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, #node) == node and string.sub(f, 1, #p) ~= p then
    redis.call('HDEL', KEYS[1], f)
  end
end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], p .. ARGV[i], ARGV[i + 1]) end
return 1
"#;

/// KEYS: hash. ARGV: node prefix (`<node> `), limit. Answers `{count, entry...}`: the other
/// nodes' members and at most `limit` of their entries.
pub(super) const READ: &str = r#"
local own, limit = ARGV[1], tonumber(ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local out, count = {0}, 0
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #own) ~= own then
    count = count + 1
    if #out <= limit then out[#out + 1] = all[i + 1] end
  end
end
out[1] = count
return out
"#;

/// KEYS: alive. ARGV: epoch, ttl (ms). 1 when the key still held the epoch (its TTL renewed).
pub(super) const REFRESH: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: alive, rooms index. ARGV: epoch. -1 while the registration is alive, else its rooms.
pub(super) const SWEEP_NODE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return -1 end
return redis.call('SMEMBERS', KEYS[2])
"#;

/// KEYS: hash. ARGV: field prefix (`<node> <epoch> `), channel, header, frame prefix (up to
/// `"leaves":[`). Deletes the registration's fields and publishes them as leaves; answers how
/// many.
pub(super) const SWEEP_ROOM: &str = r#"
local p = ARGV[1]
local all = redis.call('HGETALL', KEYS[1])
local gone = {}
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #p) == p then
    redis.call('HDEL', KEYS[1], all[i])
    gone[#gone + 1] = all[i + 1]
  end
end
if #gone > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3] .. '\n' .. ARGV[4] .. table.concat(gone, ',') .. ']}}')
end
return #gone
"#;

/// Every presence script, to load on each publishing connection.
pub(super) fn scripts() -> Vec<String> {
    [CHANGE, REGISTER, READ, REFRESH, SWEEP_NODE, SWEEP_ROOM]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}
