-- Decorating collaborator: award loyalty points when `POST /orders` answers 201, without
-- touching the monolith. The route that uses it (paths are relative to the route file):
--
--   upstreams:
--     monolith: { url: "http://127.0.0.1:8000" }
--     loyalty:  { url: "http://loyalty:7000" }
--   routes:
--     - name: orders
--       match: { path: /orders, methods: [POST] }
--       to: monolith
--       hooks:
--         - { script: loyalty.lua, on_error: continue }
--
-- after_response runs once the client has its answer, so a slow or dead loyalty service
-- never delays an order; a failed call is logged with the request id and counted.

function after_response(req, res)
  if res.status ~= 201 then
    return
  end
  if not res.body then
    log.warn("order created, but its body was over hook_body_limit: no points awarded")
    return
  end
  local order, err = json.decode(res.body)
  if not order or not order.id then
    log.warn("order answer without an id, no points awarded:", err or res.body)
    return
  end

  local answer, failure = http.request{
    upstream = "loyalty",
    method = "POST",
    path = "/points",
    headers = { ["content-type"] = "application/json", ["x-request-id"] = req.id },
    body = json.encode({
      order_id = order.id,
      customer = req.headers:get("x-customer-id"),
      total = order.total,
    }),
    timeout = "500ms",
  }
  if not answer then
    log.error("loyalty call failed for order", order.id, failure)
  elseif answer.status >= 300 then
    log.warn("loyalty answered", answer.status, "for order", order.id)
  end
end
