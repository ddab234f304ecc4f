-- wrk script for bench/run.sh: POST /queue/rerun with a 2-pair body for a
-- random seeded plan (one scenario on environments 1 and 2), so the load is
-- spread over the plans as bench/load.rs spreads it.
-- Environment: BENCH_TOKEN, PLANS, SCENARIOS.
local plans = tonumber(os.getenv("PLANS") or "500")
local scenarios = tonumber(os.getenv("SCENARIOS") or "15")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")

function init(args)
  math.randomseed(math.floor(os.clock() * 1e6) + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  local plan = math.random(plans)
  local s = plan * 1000 + math.random(scenarios)
  local body = string.format(
    '{"planId":%d,"userId":1,"frameworkType":"APPIUM","scenarioEnvironmentPairs":'
      .. '[{"scenarioId":%d,"environmentId":1},{"scenarioId":%d,"environmentId":2}]}',
    plan, s, s)
  return wrk.format(nil, "/queue/rerun", nil, body)
end
