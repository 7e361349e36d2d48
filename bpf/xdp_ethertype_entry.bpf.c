/* Entry stage of an XDP chain for `%%bpf NAME --file`: parses Ethernet and
 * tail-calls the named slot chain[ipv4] or chain[ipv6]; anything else, or an
 * empty slot, passes.
 *
 *   %%bpf entry --file bpf/xdp_ethertype_entry.bpf.c
 *   %%bpf v4 -s chain[ipv4]=parse_ipv4
 *   ...
 */
#include <uapi/linux/if_ether.h>

BPF_PROG_ARRAY(chain, 8);

int entry(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_ABORTED;
    if (eth->h_proto == bpf_htons(ETH_P_IP))
        chain.call(ctx, SLOT(chain, ipv4));
    else if (eth->h_proto == bpf_htons(ETH_P_IPV6))
        chain.call(ctx, SLOT(chain, ipv6));
    return XDP_PASS;
}
