package streamscore.kstreams;

/**
 * A record that cannot be scored, with the dead-letter reason streamscore
 * gives the same fault (docs/wire-format.md §4).
 */
final class Rejected extends Exception {
    private static final long serialVersionUID = 1L;

    final String reason;

    Rejected(String reason, String message) {
        super(message, null, false, false);
        this.reason = reason;
    }
}
