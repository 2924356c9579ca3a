-- POST /api/v1/billing/webhooks/stripe/: Stripe deliveries prepared and signed beforehand.
-- Thread N sends the lines of WEBHOOK_FILE.N in order, each "<Stripe-Signature>\t<body>". With
-- WEBHOOK_CYCLE=1 a thread starts again from its first line when its lines run out (replays);
-- otherwise done() reports how many threads ran out, since anything sent again would be a replay.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  requests, sent, ran_out = {}, 0, 0
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(os.getenv("WEBHOOK_FILE") .. "." .. id) do
    local signature, body = line:match("^([^\t]*)\t(.*)$")
    headers["Stripe-Signature"] = signature
    table.insert(requests, wrk.format("POST", "/api/v1/billing/webhooks/stripe/", headers, body))
  end
  cycle = os.getenv("WEBHOOK_CYCLE") == "1"
end

function request()
  if sent >= #requests then
    if not cycle then ran_out = 1 end
    sent = 0
  end
  sent = sent + 1
  return requests[sent]
end

function done(summary, latency, requests)
  local out = 0
  for _, thread in ipairs(threads) do out = out + thread:get("ran_out") end
  io.write(string.format("threads that ran out of deliveries: %d\n", out))
end
