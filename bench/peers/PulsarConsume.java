// Pulsar's own client as a performance consumer, for scripts/bench-brokers:
// `pulsar-perf consume` lives in pulsar-testclient, which Maven Central does
// not serve here, so this is its core on the Java `pulsar-client` the broker
// ships (receiver queue 1000, acks grouped by the client every 100 ms, as
// pulsar-perf's defaults). Prints {"records_per_second": N}, subscription
// included, JVM start-up not.
//   java -cp "$PULSAR_LIB/*" bench/peers/PulsarConsume.java pulsar://HOST:PORT persistent://public/default/T SUB COUNT
import java.util.concurrent.TimeUnit;
import org.apache.pulsar.client.api.Consumer;
import org.apache.pulsar.client.api.Message;
import org.apache.pulsar.client.api.PulsarClient;
import org.apache.pulsar.client.api.SubscriptionInitialPosition;
import org.apache.pulsar.client.api.SubscriptionType;

public class PulsarConsume {
    public static void main(String[] args) throws Exception {
        String url = args[0], topic = args[1], subscription = args[2];
        long count = Long.parseLong(args[3]);
        long start = System.nanoTime();
        try (PulsarClient client = PulsarClient.builder().serviceUrl(url).build();
             Consumer<byte[]> consumer = client.newConsumer()
                     .topic(topic)
                     .subscriptionName(subscription)
                     .subscriptionType(SubscriptionType.Failover)
                     .subscriptionInitialPosition(SubscriptionInitialPosition.Earliest)
                     .receiverQueueSize(1000)
                     .acknowledgmentGroupTime(100, TimeUnit.MILLISECONDS)
                     .subscribe()) {
            long read = 0, bytes = 0;
            while (read < count) {
                Message<byte[]> m = consumer.receive(30, TimeUnit.SECONDS);
                if (m == null) {
                    throw new IllegalStateException("no message for 30 s after " + read);
                }
                bytes += m.getData().length;
                consumer.acknowledgeAsync(m);
                read++;
            }
            double seconds = (System.nanoTime() - start) / 1e9;
            System.err.println(bytes + " payload bytes");
            System.out.printf("{\"records_per_second\": %.0f}%n", read / seconds);
        }
    }
}
