-- Argo CD health for bedrock.privatelink.io/BedrockPrivateLink (docs/gitops.md).
-- Healthy: Ready=True at the object's current generation.
-- Degraded: Stalled=True (a spec that cannot work, a failed endpoint, AWS refused a change, a
--   ConfigMap name conflict): a person must act; the message says what to fix.
-- Progressing: no status yet, the operator has not observed the current generation, or the
--   endpoints are pending / a transient error is being retried (Reconciling=True).
-- Uses only Lua's base and table libraries (argocd-cm's useOpenLibs is not needed).
local hs = { status = "Progressing", message = "Waiting for the operator to report status" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
local found = {}
for _, c in ipairs(obj.status.conditions) do
  found[c.type] = c
end
local ready = found["Ready"]
if ready == nil then
  return hs
end
if generation ~= nil and (observed == nil or observed < generation
    or (ready.observedGeneration ~= nil and ready.observedGeneration < generation)) then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end
local message = ready.message or ""
if ready.reason ~= nil then
  message = ready.reason .. ": " .. message
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
  return hs
end
local stalled = found["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message
  return hs
end
hs.message = message
return hs
