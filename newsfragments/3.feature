Certificates are renewed on a policy that works for every lifetime: two
thirds into the certificate's life (half-way for certificates shorter than
10 days), at a random point of the CA's suggested window when the CA offers
renewal information (ARI, RFC 9773; the new order names the certificate it
replaces), and at once when less than a tenth of the lifetime is left. The
options ``check_interval`` (time between two regular checks, 1 day by
default), ``profile`` (the CA's certificate profile, such as
``shortlived``) and ``reuse_key`` (keep the private key across renewals)
control it. A certificate close to expiry raises event 20114 (under 15
days left, or under a sixth of a short lifetime). A failed attempt is
retried after 1 minute, then after waits that double up to the check
interval, never sooner than the CA's Retry-After; failures and ARI windows
are kept in the state directory so a restart does not reset them.
Events 20159, 20160 and 20161 report the planned renewal, the next retry
and a failed renewal-information request.
