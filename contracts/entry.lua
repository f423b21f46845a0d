-- Phaseguard pre-trade entry decision (SPEC §4), one EVALSHA against the account's shard.
-- Mirrors worker.domain.entries.ENTRY_RULES row by row (first matching rule wins); a test runs
-- both over the same cases. Writes only the entry ledger (KEYS[3]).
--
-- KEYS: 1 registry hash, 2 state hash, 3 entry ledger hash, 4 shard calendar, 5 account calendar
-- ARGV: 1 account_id, 2 mode (live|paper), 3 kind, 4 request_id, 5 position_id or "",
--       6 at (epoch seconds, honoured only for clock = message accounts) or ""
-- Calendar blob: {"opens":"<YYYY-MM-DD><10-digit epoch s>...","min_size":"10.00"}, "opens" first
--   (worker.consumer.calendar_blob; the earlier form, "opens": [[day, epoch_s], ...], is read too)

local account, mode, kind, request_id, position_id, at_arg =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
-- decision ids start with the Redis time in microseconds: TIME's microseconds are not padded
local micros = string.format('%s%06d', t[1], tonumber(t[2]))

local reg_raw = redis.call('HGET', KEYS[1], account)
local reg = nil
if reg_raw then reg = cjson.decode(reg_raw) end
local clock = 'redis'
if reg and reg['clock'] == 'message' then
  clock = 'message'
  if at_arg ~= '' then now = tonumber(at_arg) end
end

-- the trading day of `now`: the latest published open at or before it
local today, prev_day, next_open = nil, nil, nil
local min_size = 10
local cal_key = clock == 'message' and KEYS[5] or KEYS[4]
local head = redis.call('GETRANGE', cal_key, 0, 9)
local count, day_of, open_of = 0, nil, nil
if head == '{"opens":"' then
  -- {"opens":"<records>","min_size":"10.00"}: fixed 20-character records, "YYYY-MM-DD" then the
  -- open in 10-digit epoch seconds, read a few at a time (GETRANGE) instead of decoding 8 KB
  local tail = redis.call('GETRANGE', cal_key, -40, -1)
  local size_text = string.match(tail, '","min_size":"([^"]*)"}$')
  if size_text then
    min_size = tonumber(size_text) or min_size
    local records = redis.call('STRLEN', cal_key) - 10 - #('","min_size":"' .. size_text .. '"}')
    count = math.floor(records / 20)
    local cache = {}
    local function record(i)
      local r = cache[i]
      if not r then
        r = redis.call('GETRANGE', cal_key, 10 + (i - 1) * 20, 9 + i * 20)
        cache[i] = r
      end
      return r
    end
    day_of = function(i) return string.sub(record(i), 1, 10) end
    open_of = function(i) return tonumber(string.sub(record(i), 11, 20)) end
  end
elseif head ~= '' and head ~= false then
  -- the earlier form, {"opens": [[day, epoch_s], ...]}, until the worker republishes the blob
  local cal = cjson.decode(redis.call('GET', cal_key))
  min_size = tonumber(cal['min_size'] or '10')
  local opens = cal['opens']
  count = #opens
  day_of = function(i) return opens[i][1] end
  open_of = function(i) return opens[i][2] end
end
if count > 0 then
  local lo, hi = 1, count
  local found = 0
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    if open_of(mid) <= now then found = mid; lo = mid + 1 else hi = mid - 1 end
  end
  if found > 1 and found < count then
    today = day_of(found)
    prev_day = day_of(found - 1)
    next_open = open_of(found + 1)
  end
end

local function answer(allowed, reason, phase, size, next_at, remaining)
  return {allowed = allowed, reason = reason, phase = phase or cjson.null,
          position_size = size or '0.00', next_allowed_at = next_at or cjson.null,
          remaining_today = remaining == nil and cjson.null or remaining}
end

local function bare(res)
  -- an answer that writes nothing (no account to write for): still identified
  res['decision_id'] = string.format('%s-n', micros)
  res['request_id'] = request_id
  res['at'] = now
  res['trading_day'] = today or cjson.null
  return cjson.encode(res)
end

local function finish(res, record)
  -- every answer gets an id; an allowed live entry is kept by it (R-4.8)
  local seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
  res['decision_id'] = string.format('%s-%d', micros, seq)
  res['request_id'] = request_id
  res['at'] = now
  res['trading_day'] = today or cjson.null
  local body = cjson.encode(res)
  if today then
    redis.call('HSET', KEYS[3], 'r:' .. today .. ':' .. request_id, body)
    if record then
      redis.call('HSET', KEYS[3], 'd:' .. res['decision_id'], cjson.encode({
        phase = res['phase'], size = res['position_size'], day = today, at = now,
        request_id = request_id}))
      redis.call('HSETNX', KEYS[3], 'slot:' .. today, res['phase'] .. '|' .. res['decision_id'])
    end
    if not res['allowed'] then
      local k = today .. ':' .. res['reason']
      redis.call('HSETNX', KEYS[3], 'deny:' .. k, cjson.encode({
        reason = res['reason'], at = now, request_id = request_id, mode = mode, kind = kind}))
      redis.call('HINCRBY', KEYS[3], 'denyn:' .. k, 1)
    end
  end
  return body
end

-- R-4.1: emergency exits are always allowed and never consume anything
if kind == 'emergency_exit' then
  local res = answer(true, 'emergency_exit', nil, '0.00', nil, nil)
  local seq = reg and redis.call('HINCRBY', KEYS[3], 'seq', 1) or 0
  res['decision_id'] = string.format('%s-x%d', micros, seq)
  res['request_id'] = request_id
  res['at'] = now
  res['trading_day'] = today or cjson.null
  if reg then
    local phase = redis.call('HGET', KEYS[2], 'phase')
    if phase then res['phase'] = phase end
    redis.call('HSET', KEYS[3], 'exit:' .. (today or 'unknown') .. ':' .. request_id,
      cjson.encode({at = now, request_id = request_id, mode = mode,
                    position_id = position_id ~= '' and position_id or cjson.null}))
  end
  return cjson.encode(res)
end

-- R-4.2: registry and state
if not reg then return bare(answer(false, 'unknown_account')) end
if reg['retired_at'] and reg['retired_at'] ~= cjson.null then
  return bare(answer(false, 'account_retired'))
end
local st = redis.call('HMGET', KEYS[2], 'phase', 'halted', 'degraded', 'position_size',
                      'equity', 'equity_day')
local phase = st[1]
-- a phase the worker never writes is an unreadable state, never a reason to allow (R-4.2)
local PHASES = {experience = true, proof = true, trial = true, scaling = true}
if not phase or not PHASES[phase] or not today then
  return bare(answer(false, 'state_unavailable'))
end

-- R-4.8: a repeated request_id within the trading day returns the stored decision
local stored = redis.call('HGET', KEYS[3], 'r:' .. today .. ':' .. request_id)
if stored then return stored end

local live = mode == 'live'
local size = st[4] or '0.00'
-- R-4.3
if phase == 'experience' then
  if live then return finish(answer(false, 'paper_only', phase)) end
  return finish(answer(true, 'allowed', phase, '0.00'))
end
-- R-4.4
if st[2] == '1' then return finish(answer(false, 'circuit_breaker', phase)) end
if live and st[3] == '1' then return finish(answer(false, 'input_dead_lettered', phase)) end
local limited = phase == 'proof' and live
-- R-4.5
if live then
  local equity = st[5]
  if not equity or equity == '' or (st[6] ~= today and st[6] ~= prev_day) then
    return finish(answer(false, 'equity_unknown', phase))
  end
  if tonumber(equity) <= 0 then return finish(answer(false, 'equity_depleted', phase)) end
  if tonumber(size) < min_size then
    return finish(answer(false, 'size_below_minimum', phase, size))
  end
end
-- R-4.6: one live entry a trading day in proof; the slot is consumed here, atomically
if limited and redis.call('HEXISTS', KEYS[3], 'slot:' .. today) == 1 then
  return finish(answer(false, 'daily_limit', phase, size, next_open, 0))
end
-- R-4.7
local remaining = nil
if limited then remaining = 0 end
return finish(answer(true, 'allowed', phase, size, nil, remaining), live)
