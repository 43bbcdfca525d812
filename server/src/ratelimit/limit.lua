-- One rate-limit decision on one counter, the same arithmetic as
-- `Limit::decide` in limit.rs: the two backends must give the same answers,
-- and the Redis tests compare them number for number.
--
-- KEYS[1]  the counter (one key: safe on a cluster slot)
-- ARGV[1]  algorithm: 1 GCRA, 2 sliding window, 3 daily quota, 4 monthly quota
-- ARGV[2]  limit
-- ARGV[3]  period in µs
-- ARGV[4]  burst
-- ARGV[5]  cost
-- ARGV[6]  dry run: 1 answers without taking
-- ARGV[7]  optional: "now" in µs instead of Redis TIME; only the tests send it,
--          to pin the arithmetic at chosen instants (month ends, rollovers)
--
-- Returns {allowed (0|1), remaining, reset_after_us, retry_after_us, now_us}.
--
-- Lua 5.1 numbers are doubles: every integer below 2^53 is exact, and the
-- caller keeps limit, burst and period below 2^50, so sums stay exact.
-- Division goes through fmod, which is exact, because a rounded quotient
-- can land on the next integer. Products that may pass 2^53 (the sliding
-- window's weights) go through muldiv.
--
-- The state is one string: "g <tat>", "s <index> <current> <previous>" or
-- "q <end> <used>". It expires (PXAT) once it no longer changes any answer,
-- so idle counters vanish; a state of another algorithm counts as none.

local TWO53 = 9007199254740992
local DAY = 86400000000

-- Quotient and remainder of non-negative integers below 2^53.
local function divmod(a, b)
  local r = math.fmod(a, b)
  return (a - r) / b, r
end

local function idiv(a, b)
  local q = divmod(a, b)
  return q
end

-- floor(a * b / c) and the remainder, exact when the quotient is below
-- 2^53 and c below 2^51: shift-and-add over the bits of a keeps every
-- partial value below 2c.
local function muldiv(a, b, c)
  local p = a * b
  if p < TWO53 then
    return divmod(p, c)
  end
  local bq, br = divmod(b, c)
  local bits = {}
  local n = a
  while n > 0 do
    local bit = math.fmod(n, 2)
    bits[#bits + 1] = bit
    n = (n - bit) / 2
  end
  local q, r = 0, 0
  for i = #bits, 1, -1 do
    q = q * 2
    r = r * 2
    if r >= c then
      r = r - c
      q = q + 1
    end
    if bits[i] == 1 then
      r = r + br
      if r >= c then
        r = r - c
        q = q + 1
      end
    end
  end
  return a * bq + q, r
end

local function fmt(n)
  return string.format('%.0f', n)
end

-- Howard Hinnant's civil-calendar algorithms, as in limit.rs (days since
-- the epoch, all non-negative here).
local function days_from_civil(y, m, d)
  if m <= 2 then
    y = y - 1
  end
  local era = idiv(y, 400)
  local yoe = y - era * 400
  local mp
  if m > 2 then
    mp = m - 3
  else
    mp = m + 9
  end
  local doy = idiv(153 * mp + 2, 5) + d - 1
  local doe = yoe * 365 + idiv(yoe, 4) - idiv(yoe, 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = idiv(z, 146097)
  local doe = z - era * 146097
  local yoe = idiv(doe - idiv(doe, 1460) + idiv(doe, 36524) - idiv(doe, 146096), 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + idiv(yoe, 4) - idiv(yoe, 100))
  local mp = idiv(5 * doy + 2, 153)
  local m
  if mp < 10 then
    m = mp + 3
  else
    m = mp - 9
  end
  if m <= 2 then
    y = y + 1
  end
  return y, m
end

local key = KEYS[1]
local algorithm = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local take = ARGV[6] ~= '1' and cost > 0
local now
if ARGV[7] then
  now = tonumber(ARGV[7])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local state = redis.call('GET', key)
if not state then
  state = ''
end

-- Keeps `value` until `at_us`, when it stops mattering. Rounded up to the
-- next millisecond, plus one: Redis drops a key set already expired, and a
-- millisecond may tick between TIME and SET.
local function put(value, at_us)
  redis.call('SET', key, value, 'PXAT', fmt(idiv(at_us, 1000) + 2))
end

local function gcra()
  local t = math.max(idiv(period, math.max(limit, 1)), 1)
  local tolerance = t * math.max(burst, 1)
  local tat = now
  local s = string.match(state, '^g (%d+)$')
  if s then
    tat = math.max(tonumber(s), now)
  end
  local new_tat = tat + t * cost
  local allow_at = math.max(new_tat - tolerance, 0)
  if allow_at > now then
    local remaining = idiv(math.max(now + tolerance - tat, 0), t)
    return {0, remaining, tat - now, allow_at - now, now}
  end
  local remaining = idiv(now + tolerance - new_tat, t)
  if take then
    put('g ' .. fmt(new_tat), new_tat)
  end
  return {1, remaining, new_tat - now, 0, now}
end

-- How long until `cost` fits, `into` µs into the current window.
local function sliding_retry(current, previous, into, p)
  if cost > limit then
    return 2 * p - into
  end
  if current + cost <= limit and previous > 0 then
    -- Refused, so previous > room and the quotient is below p.
    local room = limit - current - cost
    local x = p - (muldiv(room, p, previous))
    if x < p then
      return math.max(x - into, 1)
    end
  end
  local room = limit - cost
  local x = 0
  if current > 0 and room < current then
    x = p - (muldiv(room, p, current))
  end
  return p - into + x
end

local function sliding()
  local p = math.max(period, 1)
  local index = idiv(now, p)
  local current, previous = 0, 0
  local i, c, pr = string.match(state, '^s (%d+) (%d+) (%d+)$')
  if i then
    i = tonumber(i)
    if i == index then
      current, previous = tonumber(c), tonumber(pr)
    elseif i + 1 == index then
      previous = tonumber(c)
    end
  end
  local into = now - index * p
  -- The previous window's share still inside the rolling period, rounded up.
  local weighted, rest = muldiv(previous, p - into, p)
  if rest > 0 then
    weighted = weighted + 1
  end
  local used = weighted + current
  if used + cost > limit then
    local retry = sliding_retry(current, previous, into, p)
    return {0, math.max(limit - used, 0), 2 * p - into, retry, now}
  end
  local reset = p - into
  if current + cost > 0 then
    reset = 2 * p - into
  end
  if take then
    put('s ' .. fmt(index) .. ' ' .. fmt(current + cost) .. ' ' .. fmt(previous), (index + 2) * p)
  end
  return {1, limit - used - cost, reset, 0, now}
end

local function window_end()
  local day = idiv(now, DAY)
  if algorithm == 3 then
    return (day + 1) * DAY
  end
  local y, m = civil_from_days(day)
  if m == 12 then
    y, m = y + 1, 1
  else
    m = m + 1
  end
  return days_from_civil(y, m, 1) * DAY
end

local function quota()
  local e = window_end()
  local used = 0
  local se, su = string.match(state, '^q (%d+) (%d+)$')
  if se and tonumber(se) == e then
    used = tonumber(su)
  end
  local reset = e - now
  if used + cost > limit then
    return {0, math.max(limit - used, 0), reset, reset, now}
  end
  if take then
    put('q ' .. fmt(e) .. ' ' .. fmt(used + cost), e)
  end
  return {1, limit - used - cost, reset, 0, now}
end

if algorithm == 1 then
  return gcra()
elseif algorithm == 2 then
  return sliding()
elseif algorithm == 3 or algorithm == 4 then
  return quota()
end
return redis.error_reply('tollgate limit.lua: unknown algorithm ' .. tostring(ARGV[1]))
