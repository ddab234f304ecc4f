-- wrk script for bench/catalog.sh: PUT /catalog/plans/{id} of a plan with
-- 1 000 scenarios x 20 environments. Each wrk thread keeps to its own plans
-- (plan p belongs to thread (p - 1) % THREADS) and goes round them, so no two
-- connections write one plan at once. MODE=change alternates the two bodies
-- (A: scenarios 1-1000, environments 1-20; B: 1001-2000, 21-40; every plan
-- starts on A), so every PUT replaces all 1 020 list rows; MODE=same sends A
-- each time (an unchanged PUT).
-- Environment: BENCH_TOKEN, PLANS, THREADS, MODE.
local plans = tonumber(os.getenv("PLANS") or "64")
local threads = tonumber(os.getenv("THREADS") or "2")
local mode = os.getenv("MODE") or "change"
local counter = 0

local function body(side)
  local s, e = {}, {}
  for i = 1, 1000 do s[i] = tostring(i + side * 1000) end
  for i = 1, 20 do e[i] = tostring(i + side * 20) end
  return '{"projectId":1,"name":"%s","frameworkType":"APPIUM","scenarioIds":['
    .. table.concat(s, ",") .. '],"environmentIds":[' .. table.concat(e, ",") .. ']}'
end
local bodies = { [0] = body(0), [1] = body(1) }

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local mine = {}
function init(args)
  for p = 1, plans do
    if (p - 1) % threads == tid then mine[#mine + 1] = p end
  end
  i = 0
end

wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")

function request()
  local n = #mine
  local plan = mine[i % n + 1]
  local side = 0
  if mode == "change" then side = (math.floor(i / n) + 1) % 2 end
  i = i + 1
  return wrk.format(nil, "/catalog/plans/" .. plan, nil,
    string.format(bodies[side], "Plan " .. plan))
end
